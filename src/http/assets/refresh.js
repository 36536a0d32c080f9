// dingrec's status page: every few seconds, fetch this page again and put its <main> in place of
// ours, so that what the daemon knows shows without a reload. The server renders the page whole:
// with JavaScript off it is the same page, just not refreshed. Nothing here runs what it fetches
// (the new <main> arrives as inert parsed nodes; the page's CSP forbids inline script anyway).
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh"), 10);
  if (!(every >= 1000)) {
    return;
  }
  var stale = document.getElementById("stale");
  var busy = false;

  function tick() {
    if (busy || document.visibilityState === "hidden") {
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var main = fresh.getElementById("main");
        var updated = fresh.getElementById("updated");
        if (!main) {
          throw new Error("no main in the answer");
        }
        document.getElementById("main").replaceWith(document.adoptNode(main));
        if (updated) {
          document.getElementById("updated").replaceWith(document.adoptNode(updated));
        }
        stale.hidden = true;
      })
      .catch(function () {
        stale.hidden = false;
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(tick, every);
  document.addEventListener("visibilitychange", tick);
})();
