// siteward console: enhancements only; every page works without this file.
"use strict";
(function () {
  // Live job log: follow the API's event stream (it replays every line from the start),
  // append the lines the page does not show yet, update the status when the job ends.
  var log = document.getElementById("job-log");
  if (log && log.dataset.events && window.EventSource) {
    var seen = {};
    Array.prototype.forEach.call(log.children, function (li) { seen[li.dataset.id] = true; });
    var status = document.getElementById("job-status");
    var reload = document.getElementById("reload");
    if (reload) { reload.hidden = true; }
    var source = new EventSource(log.dataset.events);
    source.addEventListener("status", function (e) {
      if (seen[e.lastEventId]) { return; }
      seen[e.lastEventId] = true;
      var li = document.createElement("li");
      li.dataset.id = e.lastEventId;
      try { li.textContent = JSON.parse(e.data).message; } catch (err) { li.textContent = e.data; }
      log.appendChild(li);
    });
    source.addEventListener("end", function (e) {
      source.close();
      var s = "";
      try { s = JSON.parse(e.data).status; } catch (err) { s = "finished"; }
      if (status) {
        status.textContent = s;
        status.className = "status status-" + s;
      }
      document.body.dataset.jobDone = s;
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED && reload) { reload.hidden = false; }
    };
  }

  // Hostname checked as one types, against the server's rule (never a copy of it here).
  var host = document.querySelector("input[data-check]");
  if (host && window.fetch) {
    var hint = document.getElementById(host.getAttribute("aria-describedby"));
    var original = hint ? hint.innerHTML : "";
    var timer = null;
    host.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var value = host.value.trim();
        if (!value) { host.removeAttribute("aria-invalid"); if (hint) { hint.innerHTML = original; } return; }
        fetch(host.dataset.check + "?hostname=" + encodeURIComponent(value), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (v) {
            if (!v || !hint) { return; }
            if (v.ok) {
              host.removeAttribute("aria-invalid");
              hint.innerHTML = original;
            } else {
              host.setAttribute("aria-invalid", "true");
              hint.textContent = v.message;
              hint.className = "field-error";
            }
            if (v.ok) { hint.className = "hint"; }
          })
          .catch(function () {});
      }, 250);
    });
  }

  // Move focus to the first form error, so keyboard and screen-reader users land on it.
  var first = document.querySelector(".field-error[role=alert], #problems");
  if (first) {
    var field = first.previousElementSibling;
    if (first.id !== "problems" && field && field.focus) { field.focus(); } else { first.focus(); }
  }
})();
