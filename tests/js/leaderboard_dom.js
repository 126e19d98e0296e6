/* A minimal DOM for report/assets/leaderboard.js under node (no browser needed):
   node leaderboard_dom.js SCRIPT SPEC_JSON -> prints {"orders": [[row labels]...], "hash": ...}.
   SPEC: {"hash": "#sort=..", "tables": [{"id", "headers": [{"col","type"}|null], "rows": [[key..]]}],
          "clicks": [[table index, header cell index], ...]} */
"use strict";
const fs = require("fs");
const [script, specText] = process.argv.slice(2);
const spec = JSON.parse(specText);

function element(attrs) {
  return {
    attrs: Object.assign({}, attrs),
    getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; },
    setAttribute(k, v) { this.attrs[k] = String(v); },
    hasAttribute(k) { return k in this.attrs; },
  };
}

const tables = spec.tables.map((t) => {
  const cells = t.headers.map((h) => {
    const th = element(h ? { "data-col": h.col, "data-type": h.type, "aria-sort": "none" } : {});
    const button = { listeners: [], addEventListener(_, f) { this.listeners.push(f); } };
    th.querySelector = () => button;
    th.button = button;
    return th;
  });
  const rows = t.rows.map((keys, label) => ({ label, cells: keys.map((k) => element({ "data-sort": k })) }));
  const body = { list: rows, get rows() { return this.list.slice(); },
                 append(row) { this.list.splice(this.list.indexOf(row), 1); this.list.push(row); } };
  return { id: t.id, tBodies: [body], tHead: { rows: [{ cells }] }, headerCells: cells };
});
global.document = { getElementById: (id) => tables.find((t) => t.id === id) || null,
                    querySelectorAll: () => tables };
global.location = { hash: spec.hash || "" };
global.history = { replaceState(a, b, url) { global.location.hash = url; } };

eval(fs.readFileSync(script, "utf8"));  // the page's script, as the page runs it
for (const [table, header] of spec.clicks || []) {
  tables[table].headerCells[header].button.listeners.forEach((f) => f());
}
console.log(JSON.stringify({ orders: tables.map((t) => t.tBodies[0].list.map((r) => r.label)),
                             hash: global.location.hash }));
