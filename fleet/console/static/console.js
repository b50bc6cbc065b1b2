// edgefleet console: the live rollout page. Served as a file (the CSP allows no inline script).
// The server sends the rollout's body, already rendered and escaped, whenever its journal grows.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("[data-live]");
  if (!live) {
    return;
  }
  var source = new EventSource(live.getAttribute("data-live"));
  source.addEventListener("update", function (event) {
    live.innerHTML = event.data;
    live.setAttribute("data-updates", String(Number(live.getAttribute("data-updates")) + 1));
  });
});
