/* leaderboard.html: sort any table by any column (click a header; again to reverse).
   `#sort=<column>:<asc|desc>` in the address opens the main table (#board) sorted. */
(function () {
  "use strict";

  function key(cell, numeric) {
    var raw = cell.getAttribute("data-sort");
    if (!numeric) return raw.toLowerCase();
    return raw === "" ? null : parseFloat(raw);
  }

  function sortable(table) {
    var body = table.tBodies[0];
    var all = Array.prototype.slice.call(table.tHead.rows[0].cells);
    /* the main table's first column is the report link: not sortable */
    var offset = all[0].hasAttribute("data-col") ? 0 : 1;
    var headers = all.slice(offset);

    function sortBy(index, direction, remember) {
      var numeric = headers[index].getAttribute("data-type") === "num";
      var sign = direction === "ascending" ? 1 : -1;
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[index + offset], numeric), y = key(b.cells[index + offset], numeric);
        if (x === y) return 0;
        if (x === null) return 1;  /* missing values last, whichever the direction */
        if (y === null) return -1;
        return (x < y ? -1 : 1) * sign;
      });
      rows.forEach(function (row) { body.append(row); });
      headers.forEach(function (th, i) {
        th.setAttribute("aria-sort", i === index ? direction : "none");
      });
      if (!remember) return;
      try {
        var word = direction === "ascending" ? "asc" : "desc";
        history.replaceState(null, "", "#sort=" + encodeURIComponent(headers[index].getAttribute("data-col")) + ":" + word);
      } catch (e) { /* file: quirks */ }
    }

    headers.forEach(function (th, index) {
      th.querySelector("button").addEventListener("click", function () {
        var now = th.getAttribute("aria-sort");
        var numeric = th.getAttribute("data-type") === "num";
        var first = numeric ? "descending" : "ascending";
        var next = now === first ? (first === "ascending" ? "descending" : "ascending") : first;
        sortBy(index, next, table.id === "board");
      });
    });
    return { headers: headers, sortBy: sortBy };
  }

  var tables = Array.prototype.slice.call(document.querySelectorAll("table.board"));
  var sorters = tables.map(sortable);
  var main = tables.findIndex(function (t) { return t.id === "board"; });
  var match = /^#sort=([^:]+):(asc|desc)$/.exec(location.hash);
  if (match && main >= 0) {
    var wanted = decodeURIComponent(match[1]);
    var board = sorters[main];
    var index = board.headers.findIndex(function (th) { return th.getAttribute("data-col") === wanted; });
    if (index >= 0) board.sortBy(index, match[2] === "asc" ? "ascending" : "descending", true);
  }
})();
