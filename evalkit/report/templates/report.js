"use strict";
// evalkit's report page: sort a table by a column (a header's button) and filter the per-clip table by flag.
// Reads the DOM only (data-v: a cell's exact number; data-flags: a row's flags); user text never enters a script.
(function () {
  function number(cell) {
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? NaN : parseFloat(v);
  }

  function sortBy(table, column, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = table.tHead.rows[0].cells[column].getAttribute("data-sort") === "num";
    var sign = descending ? -1 : 1;
    rows.sort(function (a, b) {
      var x = a.cells[column], y = b.cells[column];
      if (numeric) {
        var p = number(x), q = number(y);
        if (isNaN(p) || isNaN(q)) { return isNaN(p) - isNaN(q); }  // clips without a value last, either way
        return sign * (p - q);
      }
      return sign * x.textContent.trim().localeCompare(y.textContent.trim());
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        Array.prototype.forEach.call(heads, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        sortBy(table, column, descending);
      });
    });
  });

  document.querySelectorAll("select.flag-filter").forEach(function (select) {
    var table = document.getElementById(select.getAttribute("data-table"));
    var shown = document.querySelector("output[data-table='" + table.id + "']");
    select.addEventListener("change", function () {
      var flag = select.value, n = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var keep = flag === "" || row.getAttribute("data-flags").split(" ").indexOf(flag) >= 0;
        row.hidden = !keep;
        n += keep ? 1 : 0;
      });
      shown.textContent = n + " of " + table.tBodies[0].rows.length + " clips shown";
    });
  });
})();
