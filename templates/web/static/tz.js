// Preselect the visitor's own time zone in the sign-up form (the server default is UTC).
(function () {
  var select = document.getElementById("tz");
  if (!select || select.getAttribute("data-chosen") === "1") return;
  var zone;
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
  if (!zone) return;
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) { select.selectedIndex = i; return; }
  }
})();
