// trackrelay console: enhancements only. Every action is a plain form that works without this file.
// 1. A part marked data-refresh="N" is fetched again every N seconds while the page is visible.
// 2. The silence form shows what it would mute as the matchers are typed.
(function () {
  "use strict";
  document.querySelectorAll("[data-refresh]").forEach(function (part) {
    var seconds = Math.max(5, parseInt(part.getAttribute("data-refresh"), 10) || 10);
    setInterval(function () {
      if (document.hidden) return;
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(part.id);
          if (fresh) part.replaceWith(fresh), (part = fresh);
        })
        .catch(function () {});
    }, seconds * 1000);
  });
  var form = document.getElementById("silence-form");
  if (form) {
    var timer = null;
    var matchers = ["device", "group", "rule", "type", "channel"];
    var update = function () {
      var q = new URLSearchParams();
      matchers.forEach(function (k) { q.set(k, form.elements[k].value); });
      fetch(form.getAttribute("data-preview") + "?" + q.toString(), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("preview");
          var old = document.getElementById("preview");
          if (fresh && old) old.replaceWith(fresh);
        })
        .catch(function () {});
    };
    matchers.forEach(function (k) {
      form.elements[k].addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(update, 250);
      });
    });
  }
})();
