/* report.html: item cards rendered from the embedded JSON, one page at a time.
   The data is untrusted: it reaches the DOM through textContent only, never as markup. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var users = data.users, items = data.items;
  var ranked = data.order || null;  // worst predicted first, in a run that scored likelihoods
  var PAGE_SIZE = 50;
  var state = { user: -1, query: "", truncated: false, length: false, page: 0,
                order: ranked ? "worst" : "file" };
  var matches = [];
  var haystacks = [];

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function haystack(i) {
    if (haystacks[i] === undefined) {
      var it = items[i], user = users[it.u];
      var parts = [user.id, user.name || "", it.cue || "", it.ref || ""].concat(it.s);
      (it.ctx || []).forEach(function (t) { parts.push(t[0], t[1]); });
      haystacks[i] = parts.join("\n").toLowerCase();
    }
    return haystacks[i];
  }

  function applyFilters() {
    var query = state.query.trim().toLowerCase();
    matches = [];
    var seq = state.order === "worst" ? ranked : null;
    for (var k = 0; k < items.length; k++) {
      var i = seq ? seq[k] : k, it = items[i];
      if (state.user >= 0 && it.u !== state.user) continue;
      if (state.truncated && !it.tr) continue;
      if (state.length && it.fr.indexOf("length") < 0) continue;
      if (query && haystack(i).indexOf(query) < 0) continue;
      matches.push(i);
    }
  }

  function labelled(className, label, text) {
    var box = el("div", className);
    box.append(el("span", "label", label), el("span", "text", text));
    return box;
  }

  function contextBlock(it) {
    var box = el("div", "context");
    box.append(el("span", "label", "context"));
    if (it.nctx > it.ctx.length) {
      box.append(el("p", "muted", "… " + (it.nctx - it.ctx.length) + " earlier turns"));
    }
    if (!it.ctx.length) box.append(el("p", "muted", "(no context turns)"));
    var list = el("ol", "turns");
    it.ctx.forEach(function (turn) {
      var li = el("li");
      if (turn[0]) li.append(el("b", "source", turn[0] + ": "));
      li.append(document.createTextNode(turn[1]));
      list.append(li);
    });
    box.append(list);
    return box;
  }

  function samplesBlock(it) {
    var grid = el("div", "samples");
    it.s.forEach(function (text, k) {
      var reason = it.fr[k] === undefined ? "?" : it.fr[k];
      var tokens = it.ot[k] === undefined ? "?" : it.ot[k];
      var box = el("div", "sample" + (reason === "length" ? " cut" : ""));
      box.append(el("p", "text", text),
                 el("div", "meta", "#" + (k + 1) + " · " + tokens + " tokens · " + reason));
      grid.append(box);
    });
    return grid;
  }

  function num(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  function optionList(lk) {
    var list = el("ol", "options");
    lk.options.forEach(function (o) {
      var mark = (o.option === lk.gold_option ? " · gold" : "") +
                 (o.option === lk.predicted ? " · predicted" : "");
      list.append(el("li", o.option === lk.predicted ? "picked" : null,
                     o.option + ": " + (100 * o.p).toFixed(1) + "% (log-likelihood " +
                     num(o.logprob, 2) + ")" + mark));
    });
    return list;
  }

  function likelihoodBlock(lk) {
    var box = el("div", "likelihood");
    box.append(el("span", "label", "likelihood"));
    if (!lk.scored) { box.append(el("p", "muted", "unscored: " + lk.why)); return box; }
    var facts = [];
    if (lk.body_nll_per_token !== undefined) {
      facts.push("answer NLL/token " + num(lk.body_nll_per_token),
                 "answer bits/byte " + num(lk.body_bits_per_byte),
                 "target NLL/token " + num(lk.nll_per_token) + " over " + lk.target_tokens + " tokens",
                 lk.body_greedy_match ? "greedy: every answer token" : "greedy: not every answer token");
    }
    facts.push("context " + lk.context_tokens + " tokens");
    if (lk.merged_boundary) facts.push("merged boundary");
    box.append(el("p", "figures", facts.join(" · ")));
    if (lk.options) {
      var verdict = lk.correct === true ? "right" : lk.correct === false ? "wrong" : "no gold option";
      var line = "predicted " + lk.predicted + " · gold " + (lk.gold_option === null ? "–" : lk.gold_option) +
                 " · " + verdict + " · mass on the options " + num(lk.option_mass);
      if (lk.expected !== null && lk.expected !== undefined) {
        line += " · expected " + num(lk.expected, 2) + " (|error| " + num(lk.expected_abs_error, 2) + ")";
      }
      box.append(el("p", "figures", line), optionList(lk));
    }
    return box;
  }

  function promptFold(it) {
    var fold = el("details", "prompt");
    if (it.pp === null || it.pp === undefined) {
      fold.append(el("summary", null, "full prompt: not available"),
                  el("p", "muted", data.promptNote || "the prompt could not be rebuilt"));
      return fold;
    }
    var pre = el("pre");
    fold.append(el("summary", null, "full prompt (" + it.pt + " tokens)"), pre);
    fold.addEventListener("toggle", function () {
      if (fold.open && !pre.firstChild) pre.textContent = data.prefixes[it.pp] + it.ps;
    });
    return fold;
  }

  function card(i) {
    var it = items[i], user = users[it.u];
    var node = el("article", "card");
    var head = el("header", "card-head");
    head.append(el("h2", "name", user.name || "(no name)"), el("code", "uid", user.id),
                el("span", "loc", "item " + it.loc), el("span", "tok", it.pt + " prompt tokens"));
    if (it.tr) head.append(el("span", "badge", "truncated"));
    if (it.pm !== undefined) head.append(el("span", "badge", "rebuilt prompt has " + it.pm + " tokens"));
    if (it.lk && it.lk.correct === false) head.append(el("span", "badge", "wrong option"));
    node.append(head);
    if (it.ctx) node.append(contextBlock(it));
    if (it.cue !== undefined && it.cue !== null) node.append(labelled("cue", "cue", it.cue));
    if (it.ref !== undefined && it.ref !== null) node.append(labelled("reference", "reference", it.ref));
    if (it.lk) node.append(likelihoodBlock(it.lk));
    if (it.s.length) node.append(samplesBlock(it));
    node.append(promptFold(it));
    return node;
  }

  function render() {
    var pages = Math.max(1, Math.ceil(matches.length / PAGE_SIZE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var start = state.page * PAGE_SIZE, end = Math.min(matches.length, start + PAGE_SIZE);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k++) frag.append(card(matches[k]));
    if (!matches.length) frag.append(el("p", "muted empty", "no item matches"));
    document.getElementById("cards").replaceChildren(frag);
    var n = function (x) { return x.toLocaleString("en-US"); };
    var info = matches.length
      ? "items " + n(start + 1) + "–" + n(end) + " of " + n(matches.length) + " shown (" +
        n(items.length) + " in the run) · page " + n(state.page + 1) + " of " + n(pages)
      : "0 of " + n(items.length) + " items match";
    document.querySelectorAll(".page-info").forEach(function (n) { n.textContent = info; });
    document.querySelectorAll(".prev").forEach(function (b) { b.disabled = state.page === 0; });
    document.querySelectorAll(".next").forEach(function (b) { b.disabled = state.page >= pages - 1; });
    writeHash();
  }

  function refilter() { state.page = 0; applyFilters(); render(); }

  function writeHash() {
    var params = new URLSearchParams();
    if (state.user >= 0) params.set("user", users[state.user].id);
    if (state.query) params.set("q", state.query);
    if (state.truncated) params.set("truncated", "1");
    if (state.length) params.set("length", "1");
    if (state.page) params.set("page", String(state.page + 1));
    if (ranked && state.order === "file") params.set("order", "file");
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* file: quirks */ }
  }

  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    var wanted = params.get("user");
    state.user = wanted === null ? -1 : users.findIndex(function (u) { return u.id === wanted; });
    state.query = params.get("q") || "";
    state.truncated = params.get("truncated") === "1";
    state.length = params.get("length") === "1";
    state.page = Math.max(0, (parseInt(params.get("page"), 10) || 1) - 1);
    state.order = ranked && params.get("order") !== "file" ? "worst" : "file";
  }

  function setUpControls() {
    var counts = new Array(users.length).fill(0);
    items.forEach(function (it) { counts[it.u] += 1; });
    var select = document.getElementById("user-filter");
    var frag = document.createDocumentFragment();
    users.forEach(function (u, i) {
      var option = el("option", null, (u.name ? u.name + " · " : "") + u.id + " (" + counts[i] + ")");
      option.value = String(i);
      frag.append(option);
    });
    select.append(frag);
    select.value = state.user >= 0 ? String(state.user) : "";
    var search = document.getElementById("search"), timer = null;
    search.value = state.query;
    var truncated = document.getElementById("only-truncated");
    var length = document.getElementById("only-length");
    truncated.checked = state.truncated;
    length.checked = state.length;
    select.addEventListener("change", function () {
      state.user = select.value === "" ? -1 : Number(select.value); refilter();
    });
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.query = search.value; refilter(); }, 150);
    });
    truncated.addEventListener("change", function () { state.truncated = truncated.checked; refilter(); });
    length.addEventListener("change", function () { state.length = length.checked; refilter(); });
    var order = document.getElementById("order");
    if (order) {
      order.value = state.order;
      order.addEventListener("change", function () { state.order = order.value; refilter(); });
    }
    function turn(step) { state.page += step; render(); document.getElementById("cards").scrollIntoView(); }
    document.querySelectorAll(".prev").forEach(function (b) { b.addEventListener("click", function () { turn(-1); }); });
    document.querySelectorAll(".next").forEach(function (b) { b.addEventListener("click", function () { turn(1); }); });
  }

  readHash();
  setUpControls();
  applyFilters();
  render();
})();
