// tasklens pages: actions (acknowledge / resolve / mute), links into the Airflow UI, Airflow's color mode.
(function () {
  "use strict";
  var root = document.documentElement;
  var api = root.getAttribute("data-api");

  // Follow Airflow's own light/dark toggle when embedded (same-origin iframe); else the OS preference (CSS).
  function syncTheme() {
    try {
      var parentRoot = window.parent !== window ? window.parent.document.documentElement : null;
      if (!parentRoot) return;
      var dark = parentRoot.classList.contains("dark") || parentRoot.style.colorScheme === "dark";
      var light = parentRoot.classList.contains("light") || parentRoot.style.colorScheme === "light";
      if (dark) root.setAttribute("data-theme", "dark");
      else if (light) root.setAttribute("data-theme", "light");
    } catch (e) { /* not same-origin: keep prefers-color-scheme */ }
  }
  syncTheme();
  try {
    if (window.parent !== window) {
      new MutationObserver(syncTheme).observe(window.parent.document.documentElement,
        { attributes: true, attributeFilter: ["class", "style"] });
    }
  } catch (e) { /* ignore */ }

  // Links into Airflow open in the Airflow UI itself, not inside this iframe.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-airflow]");
    if (!link || window.top === window) return;
    try {
      window.top.history.pushState(null, "", link.getAttribute("href"));
      window.top.dispatchEvent(new PopStateEvent("popstate", { state: null }));
      event.preventDefault();
    } catch (e) { /* fall back to a normal navigation */ }
  });

  function flash(message) {
    var box = document.getElementById("flash");
    if (!box) { window.alert(message); return; }
    box.textContent = message;  // text, never HTML
    box.className = "flash error";
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) return;
    var id = button.getAttribute("data-alert");
    var action = button.getAttribute("data-action");
    var resource = button.getAttribute("data-resource") || "alerts";  // "incidents": acts on every member
    var body = {};
    if (action === "mute") {
      var select = document.getElementById("mute-" + id);
      body = { duration_minutes: parseInt(select ? select.value : "60", 10) };
    }
    button.disabled = true;
    fetch(api + "/" + resource + "/" + encodeURIComponent(id) + "/" + action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Tasklens-Request": "1" },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) { window.location.reload(); return; }
      return response.json().catch(function () { return {}; }).then(function (data) {
        button.disabled = false;
        var detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : "";
        flash("Could not " + action + " alert " + id + ": HTTP " + response.status + (detail ? " " + detail : ""));
      });
    }).catch(function (error) {
      button.disabled = false;
      flash("Could not " + action + " alert " + id + ": " + error);
    });
  });

  // Timestamps in the viewer's time zone (the server renders UTC).
  document.querySelectorAll("time[datetime]").forEach(function (node) {
    var date = new Date(node.getAttribute("datetime"));
    if (!isNaN(date)) { node.title = node.textContent; node.textContent = date.toLocaleString(); }
  });
})();
