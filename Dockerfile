# tasklens on the official Apache Airflow image: Airflow + the project's locked dependencies + the tasklens package,
# the lakehouse code, and a JRE so the same image runs the Spark driver (Celery workers) and the Spark master/worker
# (identical Python and PySpark on both sides of the cluster).
#
#   docker build -t tasklens-airflow:3.3.2 .
#
# The Python minor version must match the one constraints.txt was locked with (3.11).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG AIRFLOW_VERSION=3.3.2

USER root
# default-jre-headless: Java 17 on Debian bookworm, with the /usr/lib/jvm/default-java symlink on every architecture.
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless procps \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/lakehouse /opt/tasklens \
 && chown -R airflow:0 /opt/lakehouse /opt/tasklens
ENV JAVA_HOME=/usr/lib/jvm/default-java \
    LAKEHOUSE_ROOT=/opt/lakehouse \
    PYTHONPATH=/opt/airflow/include

USER airflow
WORKDIR /opt/tasklens

# Dependencies first (cached layer). Pinning apache-airflow keeps pip from touching the image's Airflow;
# constraints.txt pins every transitive dependency to the versions the test suite ran with.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/tasklens/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /opt/tasklens/requirements.txt -c /opt/tasklens/constraints.txt

# The tasklens package: entry points register the plugin (listeners, UI) and the cluster policy.
COPY --chown=airflow:0 pyproject.toml README.md /opt/tasklens/
COPY --chown=airflow:0 plugins/tasklens /opt/tasklens/plugins/tasklens
RUN pip install --no-cache-dir --no-deps /opt/tasklens \
 && python -c "import tasklens.plugin, tasklens.policy, tasklens.store"

# DAGs and the code they import (compose mounts the working tree over these for live edits).
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include

WORKDIR /opt/airflow
