// The inspector's only script (no inline script: the pages' CSP forbids it).
// 1. Every <time datetime="…Z"> is shown in the viewer's own time zone.
// 2. The "as it was at" form sends the chosen local date and time as UTC (as_of).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    timeZoneName: "short"
  });
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var moment = new Date(el.getAttribute("datetime"));
    if (!isNaN(moment.getTime())) {
      el.title = el.getAttribute("datetime");
      el.textContent = format.format(moment);
    }
  });
  document.querySelectorAll("form[data-local-time]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var when = form.querySelector("input[name=when]");
      var asOf = form.querySelector("input[name=as_of]");
      var moment = new Date(when.value);  // a datetime-local value: the viewer's zone
      if (!isNaN(moment.getTime())) {
        asOf.value = moment.toISOString();
        when.disabled = true;  // sent as as_of only
      } else {
        asOf.disabled = true;
      }
    });
  });
});
