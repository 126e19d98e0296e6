/* leaderboard.html: sort the table by any column (click a header; again to reverse).
   `#sort=<column>:<asc|desc>` in the address opens it sorted. */
(function () {
  "use strict";
  var table = document.getElementById("board");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells, 1);  /* not the link column */

  function key(cell, numeric) {
    var raw = cell.getAttribute("data-sort");
    if (!numeric) return raw.toLowerCase();
    return raw === "" ? null : parseFloat(raw);
  }

  function sortBy(index, direction) {
    var numeric = headers[index].getAttribute("data-type") === "num";
    var sign = direction === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index + 1], numeric), y = key(b.cells[index + 1], numeric);
      if (x === y) return 0;
      if (x === null) return 1;  /* missing values last, whichever the direction */
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    rows.forEach(function (row) { body.append(row); });
    headers.forEach(function (th, i) {
      th.setAttribute("aria-sort", i === index ? direction : "none");
    });
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
      sortBy(index, now === first ? (first === "ascending" ? "descending" : "ascending") : first);
    });
  });

  var match = /^#sort=([^:]+):(asc|desc)$/.exec(location.hash);
  if (match) {
    var wanted = decodeURIComponent(match[1]);
    var index = headers.findIndex(function (th) { return th.getAttribute("data-col") === wanted; });
    if (index >= 0) sortBy(index, match[2] === "asc" ? "ascending" : "descending");
  }
})();
