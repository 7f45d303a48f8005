// durable web console: reloads the live part of a page while instances run.
// No framework: fetch the same URL, swap #live with the fresh one.
(function () {
  "use strict";
  var timer = null;

  function enabled() {
    var box = document.getElementById("auto-refresh");
    return !box || box.checked;
  }

  function schedule() {
    var live = document.getElementById("live");
    var every = live ? parseInt(live.getAttribute("data-refresh") || "0", 10) : 0;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (every > 0) { timer = setTimeout(refresh, every); }
  }

  function refresh() {
    timer = null;
    if (!enabled() || document.visibilityState === "hidden") { schedule(); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { schedule(); return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live) {
          var box = document.getElementById("auto-refresh");
          var checked = box ? box.checked : true;
          live.replaceWith(document.adoptNode(fresh));
          var again = document.getElementById("auto-refresh");
          if (again) { again.checked = checked; }
        }
        schedule();
      })
      .catch(function () { schedule(); });
  }

  document.addEventListener("DOMContentLoaded", schedule);
})();
