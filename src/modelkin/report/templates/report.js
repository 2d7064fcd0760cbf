// Sort and filter the tensor table. No network, no libraries.
(function () {
  "use strict";
  var table = document.getElementById("tensor-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var search = document.getElementById("tensor-filter");
  var component = document.getElementById("tensor-component");
  var evidenceOnly = document.getElementById("tensor-evidence");
  var count = document.getElementById("tensor-count");

  function key(row, col, numeric) {
    var cell = row.cells[col];
    var k = cell.getAttribute("data-k");
    if (numeric) {
      if (k === null || k === "") { return null; }
      return parseFloat(k);
    }
    return (k !== null ? k : cell.textContent).toLowerCase();
  }

  function sortBy(th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var sorted = rows.slice().sort(function (r1, r2) {
      var a = key(r1, col, numeric), b = key(r2, col, numeric);
      if (a === b) { return 0; }
      if (a === null) { return 1; }  // missing numbers last, whichever the direction
      if (b === null) { return -1; }
      return (a < b ? -1 : 1) * (asc ? 1 : -1);
    });
    sorted.forEach(function (r) { body.appendChild(r); });
  }

  function filter() {
    var q = search.value.trim().toLowerCase();
    var c = component.value;
    var ev = evidenceOnly.checked;
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!q || r.textContent.toLowerCase().indexOf(q) >= 0)
        && (!c || r.getAttribute("data-component") === c)
        && (!ev || r.getAttribute("data-counted") === "yes");
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " tensor pairs shown";
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.setAttribute("title", "click to sort");
  });
  search.addEventListener("input", filter);
  component.addEventListener("change", filter);
  evidenceOnly.addEventListener("change", filter);
  filter();
})();
