"use strict";
// evalkit's report page: the table of every clip, a page of rows at a time (data-page rows: a MusicCaps run has
// 5,521 rows and 11,042 players, which a browser takes minutes to lay out), sorted by any column (a header's button)
// and filtered by flag. The first page is in the table; the other rows wait, inert, in the <template> after it.
// Reads the DOM only (data-v: a cell's exact number; data-flags: a row's flags); user text never enters a script.
(function () {
  var tables = {};    // table id -> its state
  var rowTable = {};  // row id -> table id

  function number(cell) {
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? NaN : parseFloat(v);
  }

  function compare(column, numeric, sign) {
    return function (a, b) {
      var x = a.cells[column], y = b.cells[column];
      if (numeric) {
        var p = number(x), q = number(y);
        if (isNaN(p) || isNaN(q)) { return isNaN(p) - isNaN(q); }  // clips without a value last, either way
        return sign * (p - q);
      }
      return sign * x.textContent.trim().localeCompare(y.textContent.trim());
    };
  }

  function render(t) {
    var match = t.flag === "" ? t.rows : t.rows.filter(function (row) {
      return row.getAttribute("data-flags").split(" ").indexOf(t.flag) >= 0;
    });
    t.start = Math.max(0, Math.min(t.start, (Math.ceil(match.length / t.page) - 1) * t.page));
    var fragment = document.createDocumentFragment();
    match.slice(t.start, t.start + t.page).forEach(function (row) { fragment.appendChild(row); });
    t.body.replaceChildren(fragment);
    var last = Math.min(t.start + t.page, match.length);
    t.output.textContent = match.length ? (t.start + 1) + "–" + last + " of " + match.length + " clips" +
      (t.flag ? " flagged " + t.flag + " (" + t.rows.length + " in all)" : "") : "no clip flagged " + t.flag;
    t.previous.disabled = t.start === 0;
    t.next.disabled = last >= match.length;
  }

  document.querySelectorAll("table.clips").forEach(function (table) {
    var store = document.getElementById(table.id + "-rows");
    var control = function (selector) { return document.querySelector(selector + "[data-table='" + table.id + "']"); };
    var t = {
      body: table.tBodies[0], page: parseInt(table.getAttribute("data-page"), 10), start: 0, flag: "",
      rows: Array.prototype.slice.call(table.tBodies[0].rows).concat(Array.prototype.slice.call(store.content.children)),
      output: control("output"), previous: control("button.previous"), next: control("button.next"),
      select: control("select.flag-filter")
    };
    tables[table.id] = t;
    t.rows.forEach(function (row) { rowTable[row.id] = table.id; });
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        Array.prototype.forEach.call(heads, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        t.rows.sort(compare(column, th.getAttribute("data-sort") === "num", descending ? -1 : 1));
        t.start = 0;
        render(t);
      });
    });
    t.select.addEventListener("change", function () { t.flag = t.select.value; t.start = 0; render(t); });
    t.previous.addEventListener("click", function () { t.start -= t.page; render(t); });
    t.next.addEventListener("click", function () { t.start += t.page; render(t); });
    render(t);
  });

  // A link to a clip's row (from the clips at the top, the audit): show the page holding it, then follow the link.
  function reveal(id) {
    var t = tables[rowTable[id]];
    if (!t || document.getElementById(id)) { return; }
    var at = t.rows.findIndex(function (row) { return row.id === id; });
    t.flag = "";
    t.select.value = "";
    t.start = Math.floor(at / t.page) * t.page;
    render(t);
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[href^='#']");
    if (link) { reveal(decodeURIComponent(link.getAttribute("href").slice(1))); }
  });
  if (location.hash) {
    reveal(decodeURIComponent(location.hash.slice(1)));
    var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) { target.scrollIntoView(); }
  }
})();
