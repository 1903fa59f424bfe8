// Registrar's console: the pages work without this; it makes them live.
// Served from 'self' only (the CSP allows no inline script), and it never builds markup
// from data: it swaps in elements the server rendered and escaped.
(function () {
  "use strict";

  // Keep [data-live] elements current: when the server says something changed, fetch this
  // page again and swap those elements in place (the selection in the list survives).
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh) return;
          var checked = new Set(Array.prototype.map.call(el.querySelectorAll("input[name=mac]:checked"), function (i) { return i.value; }));
          el.replaceWith(fresh);
          fresh.querySelectorAll("input[name=mac]").forEach(function (i) { if (checked.has(i.value)) i.checked = true; });
        });
      })
      .catch(function () {});
  }

  if (document.querySelector("[data-live]") && window.EventSource) {
    var timer = null;
    var events = new EventSource("/events");
    events.addEventListener("changed", function () {
      if (timer) return;
      timer = setTimeout(function () { timer = null; refresh(); }, 250);
    });
  }

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("#rows input[name=mac]").forEach(function (i) { i.checked = all.checked; });
    });
  }

  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (e) {
      if (!window.confirm(button.getAttribute("data-confirm"))) e.preventDefault();
    });
  });

  // Loading a chosen file into the paste box lets the preview show what will be imported.
  var file = document.querySelector("form.import input[type=file]");
  var paste = document.getElementById("csv");
  if (file && paste) {
    file.addEventListener("change", function () {
      var f = file.files && file.files[0];
      if (!f || f.size > 8 * 1024 * 1024) return;
      f.text().then(function (t) { paste.value = t; });
    });
  }
})();
