// koyojobs dashboard: refreshes the queues page's counts by short polling.
// The page names its JSON endpoint in <body data-poll>; nothing else runs.
"use strict";
(function () {
  var url = document.body.getAttribute("data-poll");
  if (!url) return;
  var EVERY_MS = 3000;

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    var s = Math.max(0, Math.floor(seconds));
    var units = [["d", 86400, "h", 3600], ["h", 3600, "min", 60]];
    for (var i = 0; i < units.length; i++) {
      var u = units[i];
      if (s >= u[1]) {
        var rest = Math.floor((s % u[1]) / u[3]);
        return Math.floor(s / u[1]) + u[0] + (rest ? " " + rest + u[2] : "");
      }
    }
    if (s >= 60) return Math.floor(s / 60) + "min" + (s % 60 ? " " + (s % 60) + "s" : "");
    return s + "s";
  }

  function show(queues) {
    var rows = document.querySelectorAll("tr[data-queue]");
    for (var i = 0; i < rows.length; i++) {
      var counts = queues[rows[i].getAttribute("data-queue")];
      if (!counts) continue;
      var cells = rows[i].querySelectorAll("[data-live]");
      for (var j = 0; j < cells.length; j++) {
        var field = cells[j].getAttribute("data-live");
        // textContent, never innerHTML: a value can carry no markup.
        if (field === "oldest_wait") cells[j].textContent = age(counts[field]);
        else if (field === "paused") cells[j].textContent = counts.paused ? "paused" : "active";
        else if (counts[field] === null) cells[j].textContent = "-";
        else cells[j].textContent = String(counts[field]);
      }
    }
  }

  function poll() {
    if (document.hidden) return;  // a tab nobody looks at costs the database nothing
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body) show(body.queues); })
      .catch(function () {});
  }
  setInterval(poll, EVERY_MS);
  document.addEventListener("visibilitychange", poll);
}());
