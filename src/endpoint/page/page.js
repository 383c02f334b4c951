// The usage page of tower-usage: reads `M` (the URL this script was loaded
// from, minus `/page.js`) with the token the reader enters. Hand-written, no
// framework. Every string that came from a record is set with `textContent`
// or as an attribute value, never parsed as HTML.
(function () {
  "use strict";

  var SRC = document.currentScript.src;
  var M = SRC.slice(0, SRC.lastIndexOf("/"));
  var TOKEN_KEY = "tower-usage-token";
  var SVG = "http://www.w3.org/2000/svg";
  var CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];
  var FILTERS = ["method", "path", "status", "route", "outcome", "traceId"];
  var RANGES = {
    hour: { ms: 3600e3, interval: "minute", step: 60e3, label: "hour" },
    day: { ms: 86400e3, interval: "hour", step: 3600e3, label: "day" },
    week: { ms: 7 * 86400e3, interval: "hour", step: 3600e3, label: "7 days" },
    month: { ms: 30 * 86400e3, interval: "day", step: 86400e3, label: "30 days" }
  };
  var PAGE_SIZE = 50;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- the token: sessionStorage only, sent only as `Authorization` -------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lives for this view only */ }
    memoryToken = value;
    admin = null;
    $("consumer-pick").hidden = true;
    delete document.body.dataset.admin;
  }
  var memoryToken = "";

  function currentToken() { return token() || memoryToken; }

  // --- state kept in the URL's hash: range, filters, open record ----------

  function readState() {
    var params = new URLSearchParams(location.hash.slice(1));
    var state = { range: params.get("range") || "day", record: params.get("record") || "" };
    state.from = params.get("from") || "";
    state.to = params.get("to") || "";
    state.consumer = params.get("consumer") || "";
    if (state.range === "custom" ? !customPeriod(state) : !RANGES[state.range]) state.range = "day";
    FILTERS.forEach(function (name) { state[name] = params.get(name) || ""; });
    return state;
  }

  function writeState(state) {
    var params = new URLSearchParams();
    if (state.range !== "day") params.set("range", state.range);
    if (state.range === "custom") {
      params.set("from", state.from);
      params.set("to", state.to);
    }
    FILTERS.forEach(function (name) { if (state[name]) params.set(name, state[name]); });
    if (state.consumer) params.set("consumer", state.consumer);
    if (state.record) params.set("record", state.record);
    var hash = params.toString();
    if (location.hash.slice(1) !== hash) location.hash = hash;
    else render();
  }

  // --- the period shown: a named range up to now, or a custom one ---------

  // `from` and `to` as the `datetime-local` inputs give them (local time).
  function customPeriod(state) {
    var since = new Date(state.from);
    var until = new Date(state.to);
    if (!state.from || !state.to || isNaN(since) || isNaN(until) || since >= until) return null;
    var ms = until.getTime() - since.getTime();
    var hours = ms / 3600e3;
    var range = hours <= 3 ? { interval: "minute", step: 60e3 }
      : hours <= 8 * 24 ? { interval: "hour", step: 3600e3 }
      : { interval: "day", step: 86400e3 };
    range.ms = ms;
    range.label = hours < 48 ? Math.round(hours * 10) / 10 + " hours" : Math.round(hours / 24) + " days";
    range.during = "in this range";
    return { since: since, until: until, range: range };
  }

  function period(state) {
    if (state.range === "custom") {
      var custom = customPeriod(state);
      if (custom) return custom;
    }
    var range = RANGES[state.range] || RANGES.day;
    range.during = "in the last " + range.label;
    var until = new Date();
    return { since: new Date(until.getTime() - range.ms), until: until, range: range, now: true };
  }

  // --- talking to M ------------------------------------------------------

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function url(path, params) {
    var query = params ? params.toString() : "";
    return M + path + (query ? "?" + query : "");
  }

  // At most two reads at once: the service answers a consumer's third
  // concurrent read `429` (`UsageService::max_reads_per_consumer`, 2 by
  // default). A `429` all the same (another tab) is tried again after its
  // `Retry-After`, at most three times.
  var MAX_PARALLEL = 2;
  var running = 0;
  var waiting = [];

  function acquire() {
    return new Promise(function (resolve) {
      if (running < MAX_PARALLEL) {
        running += 1;
        resolve();
      } else {
        waiting.push(resolve);
      }
    });
  }

  function release() {
    var next = waiting.shift();
    if (next) {
      next();
    } else {
      running -= 1;
    }
  }

  function send(path, params, read, tries) {
    // Without a token (cookie mode), no `Authorization` at all.
    var headers = currentToken()
      ? { "Authorization": "Bearer " + currentToken(), "Accept": "application/json" }
      : { "Accept": "application/json" };
    return fetch(url(path, params), {
      headers: headers,
      cache: "no-store",
      credentials: "same-origin"
    }).then(function (res) {
      if (res.status === 429 && tries < 3) {
        var wait = Math.min(5, parseInt(res.headers.get("Retry-After"), 10) || 1);
        return new Promise(function (resolve) { setTimeout(resolve, wait * 1000); })
          .then(function () { return send(path, params, read, tries + 1); });
      }
      if (res.ok) return read(res);
      return res.json().catch(function () { return {}; }).then(function (body) {
        throw new ApiError(res.status, body && typeof body.error === "string" ? body.error : "");
      });
    }, function () {
      throw new ApiError(0, "");
    });
  }

  // `read` takes the body (whole, before the read's slot is given back).
  function request(path, params, read) {
    return acquire().then(function () {
      return send(path, params, read, 0);
    }).then(function (value) {
      release();
      return value;
    }, function (err) {
      release();
      throw err;
    });
  }

  function getJson(path, params) {
    return request(path, params, function (res) { return res.json(); });
  }

  function explain(err) {
    if (!(err instanceof ApiError)) return "Something went wrong while drawing the page: " + err;
    switch (err.status) {
      case 0: return "The server could not be reached. Check your connection and reload the page.";
      case 401: return "This token was not accepted (401 Unauthorized). Check it and enter it again above.";
      case 403: return "This token may not see these records (403 Forbidden).";
      case 503: return "Usage storage is unavailable right now (503). Try again in a minute.";
      default: return "The server answered " + err.status + (err.message ? ": " + err.message : ".");
    }
  }

  function say(text, isError) {
    var box = $("message");
    box.textContent = text || "";
    box.className = isError ? "error" : "";
  }

  function fail(err) {
    say(explain(err), true);
    if (err instanceof ApiError && err.status === 401) {
      if (!currentToken()) cookieMode = false;
      setToken("");
      showTokenForm(true);
      $("view").hidden = true;
      $("detail").hidden = true;
    }
  }

  // --- formatting --------------------------------------------------------

  var numberFormat = new Intl.NumberFormat();

  function count(n) { return numberFormat.format(n); }

  function percent(part, whole) {
    if (!whole) return "–";
    var p = 100 * part / whole;
    return (p < 10 && p > 0 ? p.toFixed(1) : Math.round(p)) + "%";
  }

  function duration(us) {
    if (us === undefined || us === null) return "–";
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 1 : 0) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    var units = ["KiB", "MiB", "GiB", "TiB"];
    var i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
    return n.toFixed(n < 10 ? 1 : 0) + " " + units[i];
  }

  function timeCell(iso) {
    var cell = el("td");
    var t = new Date(iso);
    var time = el("time", isNaN(t) ? iso : t.toLocaleString());
    time.setAttribute("datetime", String(iso));
    time.title = isNaN(t) ? String(iso) : t.toISOString().replace("T", " ").replace("Z", " UTC");
    cell.appendChild(time);
    return cell;
  }

  // --- the summary: headline numbers, chart, routes ----------------------

  function summaryParams(state, since, until, interval, groupBy) {
    var params = new URLSearchParams();
    params.set("since", since.toISOString());
    params.set("until", until.toISOString());
    params.set("interval", interval);
    if (groupBy) params.set("groupBy", groupBy);
    if (state.consumer) params.set("consumer", state.consumer);
    return params;
  }

  // The buckets of one summary before `split` (the previous period), summed,
  // and those from it on. The previous p95 is left out (`null`): percentiles
  // do not add up; it comes from a summary of the previous period alone.
  function splitBuckets(buckets, split) {
    var previous = { requests: 0, clientErrors: 0, serverErrors: 0, requestBytes: 0, responseBytes: 0,
      durationUs: { p95: 0 } };
    var current = [];
    buckets.forEach(function (b) {
      if (new Date(b.start).getTime() >= split.getTime()) {
        current.push(b);
        return;
      }
      ["requests", "clientErrors", "serverErrors", "requestBytes", "responseBytes"].forEach(function (k) {
        previous[k] += b[k];
      });
    });
    previous.durationUs.p95 = null;
    return { previous: previous, current: current };
  }

  function headline(now, before, range) {
    var box = $("headline");
    clear(box);
    var cards = [
      ["Requests", count(now.requests), now.requests, before.requests],
      ["Error rate", percent(now.clientErrors + now.serverErrors, now.requests),
        rate(now), rate(before)],
      ["p95 latency", now.requests ? duration(now.durationUs.p95) : "–",
        now.requests ? now.durationUs.p95 : null, before.requests ? before.durationUs.p95 : null,
        "p95"],
      ["Bytes in + out", bytes(now.requestBytes + now.responseBytes),
        now.requestBytes + now.responseBytes, before.requestBytes + before.responseBytes]
    ];
    cards.forEach(function (c) {
      var card = el("div", null, "card");
      card.appendChild(el("div", c[0], "label"));
      card.appendChild(el("div", c[1], "value"));
      var d = el("div", c[3] === null && before.requests ? "…" : delta(c[2], c[3], range), "delta");
      if (c[4]) d.id = "delta-" + c[4];
      card.appendChild(d);
      box.appendChild(card);
    });
  }

  function rate(total) {
    return total.requests ? (total.clientErrors + total.serverErrors) / total.requests : null;
  }

  function delta(now, before, range) {
    var period = "the previous " + range.label;
    if (before === null || before === undefined || now === null) return "no data for " + period;
    if (before === 0) return now === 0 ? "same as " + period : "none in " + period;
    var change = Math.round(100 * (now - before) / before);
    if (change === 0) return "same as " + period;
    return (change > 0 ? "+" : "") + change + "% vs " + period;
  }

  function chart(buckets, since, until, range) {
    var figure = $("chart");
    clear(figure);
    var first = Math.floor(since.getTime() / range.step) * range.step;
    var slots = [];
    for (var t = first; t < until.getTime(); t += range.step) slots.push({ start: t, by: {} , total: 0 });
    var index = {};
    slots.forEach(function (slot, i) { index[slot.start] = i; });
    buckets.forEach(function (b) {
      var i = index[new Date(b.start).getTime()];
      if (i === undefined || CLASSES.indexOf(b.status) < 0) return;
      slots[i].by[b.status] = (slots[i].by[b.status] || 0) + b.requests;
      slots[i].total += b.requests;
    });
    var max = slots.reduce(function (m, s) { return Math.max(m, s.total); }, 0);
    var width = 1000, height = 180, pad = 4;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Requests per " + range.interval + " by status class, highest " + max);
    var slotWidth = width / Math.max(slots.length, 1);
    slots.forEach(function (slot, i) {
      var y = height;
      CLASSES.forEach(function (cls) {
        var n = slot.by[cls];
        if (!n) return;
        var h = (height - pad) * n / max;
        y -= h;
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", String(i * slotWidth + slotWidth * 0.1));
        rect.setAttribute("y", String(y));
        rect.setAttribute("width", String(Math.max(slotWidth * 0.8, 1)));
        rect.setAttribute("height", String(h));
        rect.setAttribute("class", "s" + cls);
        var title = document.createElementNS(SVG, "title");
        title.textContent = new Date(slot.start).toLocaleString() + " · " + cls + ": " + count(n);
        rect.appendChild(title);
        svg.appendChild(rect);
      });
    });
    figure.appendChild(svg);
    var axis = el("div", null, "axis");
    axis.appendChild(el("span", since.toLocaleString()));
    axis.appendChild(el("span", range.during.indexOf("last") >= 0 ? "now" : until.toLocaleString()));
    figure.appendChild(axis);
    var legend = el("figcaption", null, "legend");
    CLASSES.forEach(function (cls) {
      var item = el("span");
      item.appendChild(el("span", null, "swatch s" + cls));
      item.appendChild(document.createTextNode(cls));
      legend.appendChild(item);
    });
    legend.appendChild(el("span", max ? "highest bar: " + count(max) + " per " + range.interval : "no requests in this range"));
    figure.appendChild(legend);
  }

  // Latency over time: p50 and p95 per slot that had requests. First drawn
  // from the buckets of the requests chart (one per status class: the p50 is
  // their mean weighted by requests, the p95 the highest of them, marked as
  // estimates), then from a summary of the same slots without groups, whose
  // percentiles are the slots' own (`exact`).
  function latency(buckets, since, until, range, exact) {
    var figure = $("latency");
    clear(figure);
    figure.dataset.exact = exact ? "yes" : "no";
    var slots = {};
    buckets.forEach(function (b) {
      var t = new Date(b.start).getTime();
      var s = slots[t] || (slots[t] = { start: t, requests: 0, p50: 0, p95: 0 });
      s.p50 += b.durationUs.p50 * b.requests;
      s.requests += b.requests;
      s.p95 = Math.max(s.p95, b.durationUs.p95);
    });
    var points = Object.keys(slots).map(function (k) {
      var s = slots[k];
      return { start: s.start, p50: s.requests ? s.p50 / s.requests : 0, p95: s.p95 };
    }).sort(function (a, b) { return a.start - b.start; });
    var max = points.reduce(function (m, p) { return Math.max(m, p.p95); }, 0);
    var width = 1000, height = 140, pad = 6;
    var first = Math.floor(since.getTime() / range.step) * range.step;
    // The same slots as the bars above: a point at the middle of its bar.
    var slotCount = Math.max(Math.ceil((until.getTime() - first) / range.step), 1);
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Latency p50 and p95 per " + range.interval + ", highest p95 " + duration(max));
    ["p50", "p95"].forEach(function (key) {
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "line " + key);
      line.setAttribute("fill", "none");
      var xy = points.map(function (p) {
        var x = width * ((p.start - first) / range.step + 0.5) / slotCount;
        var y = height - pad - (height - 2 * pad) * (max ? p[key] / max : 0);
        return [x.toFixed(1), y.toFixed(1), p];
      });
      line.setAttribute("points", xy.map(function (c) { return c[0] + "," + c[1]; }).join(" "));
      var title = document.createElementNS(SVG, "title");
      title.textContent = key;
      line.appendChild(title);
      svg.appendChild(line);
      // A dot per point: one slot alone draws no line.
      xy.forEach(function (c) {
        var dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", c[0]);
        dot.setAttribute("cy", c[1]);
        dot.setAttribute("r", "3");
        dot.setAttribute("class", "dot " + key);
        var tip = document.createElementNS(SVG, "title");
        tip.textContent = new Date(c[2].start).toLocaleString() + " · " + key + ": " + duration(Math.round(c[2][key]));
        dot.appendChild(tip);
        svg.appendChild(dot);
      });
    });
    figure.appendChild(svg);
    var legend = el("figcaption", null, "legend");
    ["p50", "p95"].forEach(function (key) {
      var item = el("span");
      item.appendChild(el("span", null, "swatch " + key));
      item.appendChild(document.createTextNode(key));
      legend.appendChild(item);
    });
    legend.appendChild(el("span", points.length ? "highest p95: " + duration(max) : "no requests in this range"));
    if (!exact && points.length) legend.appendChild(el("span", "(estimates, refining…)"));
    figure.appendChild(legend);
  }

  function routes(summary) {
    var rows = {};
    summary.buckets.forEach(function (b) {
      var key = b.route === null || b.route === undefined ? "" : b.route;
      var r = rows[key] || (rows[key] = { route: key, requests: 0, errors: 0, bytes: 0, p95: 0, months: 0 });
      r.months += 1;
      r.requests += b.requests;
      r.errors += b.clientErrors + b.serverErrors;
      r.bytes += b.requestBytes + b.responseBytes;
      // Months are summed; percentiles do not add up: over two months the
      // table shows the higher month's p95 as a bound (`≤`).
      r.p95 = Math.max(r.p95, b.durationUs.p95);
    });
    routeRows = Object.keys(rows).map(function (k) {
      rows[k].rate = rows[k].requests ? rows[k].errors / rows[k].requests : 0;
      return rows[k];
    });
    drawRoutes();
  }

  // The routes table's order: a column and a direction, changed from its headers.
  var routeRows = [];
  var routeSort = { key: "requests", dir: -1 };

  function drawRoutes() {
    var key = routeSort.key;
    var dir = routeSort.dir;
    var list = routeRows.slice().sort(function (a, b) {
      var x = a[key], y = b[key];
      var order = x < y ? -1 : x > y ? 1 : 0;
      return dir * order || (a.route < b.route ? -1 : 1);
    });
    Array.prototype.forEach.call(document.querySelectorAll("#routes th"), function (th) {
      var button = th.querySelector("button");
      if (button && button.dataset.sort === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    var body = $("routes").tBodies[0];
    clear(body);
    list.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.route || "(no route)", "path"));
      tr.appendChild(el("td", count(r.requests), "num"));
      tr.appendChild(el("td", percent(r.errors, r.requests), "num"));
      var p95 = el("td", (r.months > 1 ? "≤ " : "") + duration(r.p95), "num");
      if (r.months > 1) p95.title = "The range spans " + r.months + " calendar months: the higher of their p95s, an upper bound";
      tr.appendChild(p95);
      tr.appendChild(el("td", bytes(r.bytes), "num"));
      body.appendChild(tr);
    });
    if (!list.length) {
      var tr = el("tr");
      var td = el("td", "No requests in this range.");
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  // --- admins: a consumer picker ------------------------------------------

  // Whether this token is an admin's: unknown (null) until the summary by
  // consumer, asked once per token after the first view is drawn, answers
  // 200 (an admin) or 403 (not). Never part of the first view's reads.
  var admin = null;

  function probeAdmin(state, since, until) {
    if (admin !== null) return;
    var params = summaryParams({}, since, until, "month", "consumer");
    var asked = currentToken();
    getJson("/summary", params).then(function (summary) {
      if (asked !== currentToken()) return;
      admin = true;
      var seen = {};
      summary.buckets.forEach(function (b) { if (b.consumer) seen[b.consumer] = true; });
      if (state.consumer) seen[state.consumer] = true;
      var select = $("consumer");
      while (select.options.length > 1) select.remove(1);
      Object.keys(seen).sort().forEach(function (id) {
        var option = el("option", id);
        option.value = id;
        select.appendChild(option);
      });
      select.value = state.consumer;
      $("consumer-pick").hidden = false;
      document.body.dataset.admin = "yes";
    }, function (err) {
      if (asked !== currentToken() || !(err instanceof ApiError) || err.status !== 403) return;
      admin = false;
      document.body.dataset.admin = "no";
    });
  }

  // --- the history -------------------------------------------------------

  function listParams(state, since, until) {
    var params = new URLSearchParams();
    params.set("order", "desc");
    params.set("since", since.toISOString());
    if (until) params.set("until", until.toISOString());
    if (state.method) params.set("method", state.method);
    if (state.path) {
      var p = state.path.charAt(0) === "/" ? state.path : "/" + state.path;
      params.set("path", p.slice(-1) === "*" ? p : p + "*");
    }
    if (state.status) params.set("status", state.status);
    if (state.route) params.set("route", state.route);
    if (state.outcome) params.set("outcome", state.outcome);
    if (state.traceId) params.set("traceId", state.traceId);
    if (state.consumer) params.set("consumer", state.consumer);
    return params;
  }

  var nextCursor = null;
  var listBase = null;

  function history(page, append) {
    var body = $("history").tBodies[0];
    if (!append) clear(body);
    page.requests.forEach(function (r) { body.appendChild(historyRow(r)); });
    nextCursor = page.nextCursor;
    $("more").hidden = !nextCursor;
  }

  function historyRow(r) {
    var tr = el("tr");
    tr.tabIndex = 0;
    tr.dataset.id = String(r.id);
    tr.dataset.created = String(r.createdAt);
    tr.appendChild(timeCell(r.createdAt));
    tr.appendChild(el("td", r.method));
    tr.appendChild(el("td", r.path, "path"));
    tr.appendChild(el("td", r.status, "num"));
    tr.appendChild(el("td", duration(r.durationUs), "num"));
    tr.appendChild(el("td", r.outcome));
    return tr;
  }

  // --- live mode: new records on top, polled while the tab is visible ------

  var LIVE_EVERY_MS = 3000;
  var LIVE_MAX_ROWS = 500;
  var liveTimer = null;

  function setLive(on) {
    if (liveTimer) clearInterval(liveTimer);
    liveTimer = on ? setInterval(poll, LIVE_EVERY_MS) : null;
    $("live").checked = on;
  }

  function poll() {
    if (document.hidden || !listBase || $("view").hidden) return;
    var body = $("history").tBodies[0];
    var params = new URLSearchParams(listBase);
    var newest = body.querySelector("tr[data-created]");
    if (newest) params.set("since", newest.dataset.created);
    params.set("limit", "100");
    var mine = generation;
    getJson("", params).then(function (page) {
      if (mine !== generation) return;
      var shown = {};
      Array.prototype.forEach.call(body.rows, function (tr) { shown[tr.dataset.id] = true; });
      var anchor = body.firstChild;
      page.requests.forEach(function (r) {
        if (!shown[String(r.id)]) body.insertBefore(historyRow(r), anchor);
      });
      // Bounded: the oldest rows go, and with them the way to older pages.
      if (body.rows.length > LIVE_MAX_ROWS) {
        while (body.rows.length > LIVE_MAX_ROWS) body.deleteRow(-1);
        nextCursor = null;
        $("more").hidden = true;
      }
      $("empty").hidden = body.rows.length > 0 || !$("empty").textContent;
    }, function (err) {
      setLive(false);
      fail(err);
    });
  }

  function emptyState(state, range, anyRecords) {
    var box = $("empty");
    var filtered = FILTERS.some(function (name) { return state[name]; });
    box.hidden = anyRecords;
    if (anyRecords) return;
    box.textContent = filtered
      ? "No request matches these filters " + range.during + ". Clear a filter or choose a longer range."
      : "No requests recorded for this token " + range.during +
        ". Send a request to the API with this same token, then choose a range again to refresh.";
  }

  function loadMore() {
    if (!nextCursor || !listBase) return;
    var params = new URLSearchParams(listBase);
    params.set("limit", String(PAGE_SIZE));
    params.set("cursor", nextCursor);
    $("more").disabled = true;
    getJson("", params).then(function (page) { history(page, true); }, fail)
      .then(function () { $("more").disabled = false; });
  }

  // --- one record ----------------------------------------------------------

  function headerText(headers) {
    if (!headers || typeof headers !== "object") return "(none)";
    var lines = Object.keys(headers).map(function (k) {
      var v = headers[k];
      return k + ": " + (Array.isArray(v) ? v.join(", ") : v);
    });
    return lines.length ? lines.join("\n") : "(none)";
  }

  function bodyText(body, size) {
    if (body === undefined || body === null) return "(none)";
    if (typeof body === "string") return body.length ? body : "(empty)";
    if (body.encoding === "base64" && typeof body.data === "string") {
      var raw;
      try { raw = atob(body.data); } catch (e) { raw = ""; }
      var hex = [];
      for (var i = 0; i < Math.min(raw.length, 256); i++) {
        hex.push(("0" + raw.charCodeAt(i).toString(16)).slice(-2));
      }
      return "binary, " + raw.length + " bytes" + (raw.length > 256 ? " (first 256 shown)" : "") + ":\n" + hex.join(" ");
    }
    if (typeof body === "object" && Object.keys(body).length === 0 && !size) return "(empty)";
    return JSON.stringify(body, null, 2);
  }

  // A binary (base64) body as a file to save: the bytes as they were kept.
  function downloadLink(linkId, body, name) {
    var link = $(linkId);
    var old = link.getAttribute("href");
    if (old && old.indexOf("blob:") === 0) URL.revokeObjectURL(old);
    link.removeAttribute("href");
    link.hidden = true;
    if (!body || body.encoding !== "base64" || typeof body.data !== "string") return;
    var raw;
    try { raw = atob(body.data); } catch (e) { return; }
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    link.download = name;
    link.textContent = "Download " + (linkId === "req-download" ? "the request body" : "the response body") +
      " (" + bytes.length + " bytes)";
    link.hidden = false;
  }

  // The record id to the clipboard, or, where the browser refuses, shown to
  // copy by hand.
  function copyId(id) {
    var byHand = function () { say("Copy the record id by hand: " + id); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(id).then(function () {
        say("Copied the record id " + id + ".");
      }, byHand);
    } else {
      byHand();
    }
  }

  function showRecord(id) {
    $("view").hidden = true;
    $("detail").hidden = false;
    var meta = $("detail-meta");
    clear(meta);
    ["req-headers", "req-body", "res-headers", "res-body"].forEach(function (k) { $(k).textContent = ""; });
    $("detail-title").textContent = "Request " + id;
    getJson("/" + encodeURIComponent(id)).then(function (r) {
      $("detail-title").textContent = r.method + " " + r.path;
      [["Id", r.id], ["Time", null], ["Status", r.status], ["Duration", duration(r.durationUs)],
        ["Outcome", r.outcome], ["Route", r.route || "(no route)"], ["Consumer", r.consumer || "(anonymous)"],
        ["Trace", r.traceId ? r.traceId + " (calling span " + r.spanId + ")" : "(none)"]]
        .forEach(function (row) {
          meta.appendChild(el("dt", row[0]));
          if (row[0] === "Id") {
            var idCell = el("dd", r.id);
            var copy = el("button", "Copy");
            copy.type = "button";
            copy.id = "copy-id";
            copy.addEventListener("click", function () { copyId(r.id); });
            idCell.appendChild(document.createTextNode(" "));
            idCell.appendChild(copy);
            meta.appendChild(idCell);
          } else if (row[0] === "Time") {
            var dd = el("dd");
            var cell = timeCell(r.createdAt);
            while (cell.firstChild) dd.appendChild(cell.firstChild);
            meta.appendChild(dd);
          } else {
            meta.appendChild(el("dd", row[1]));
          }
        });
      var req = r.request || {};
      $("req-headers").textContent = headerText(req.headers);
      $("req-body").textContent = bodyText(req.body, req.bodySize);
      $("res-headers").textContent = headerText(r.responseHeaders);
      $("res-body").textContent = bodyText(r.response, r.responseSize);
      downloadLink("req-download", req.body, r.id + "-request.bin");
      downloadLink("res-download", r.response, r.id + "-response.bin");
      $("detail-title").focus();
    }, fail);
  }

  // --- export: fetched with the header, saved as a blob -------------------

  function exportAs(format) {
    var state = readState();
    var shown = period(state);
    var params = listParams(state, shown.since, shown.now ? null : shown.until);
    params.set("format", format);
    say("Preparing the " + format.toUpperCase() + " export…");
    var name = "usage." + format;
    request("", params, function (res) {
      var disposition = res.headers.get("content-disposition") || "";
      var match = /filename="([A-Za-z0-9._-]+)"/.exec(disposition);
      if (match) name = match[1];
      return res.blob();
    }).then(function (blob) {
      var link = el("a");
      link.href = URL.createObjectURL(blob);
      link.download = name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
      say("Saved " + name + ".");
    }, fail);
  }

  // --- putting it together ------------------------------------------------

  var generation = 0;

  // Cookie mode: whether `M` answers this tab without a token (the app's
  // `IdentifyConsumer` reads its own session cookie). Unknown (null) until
  // the first view, tried without `Authorization`, answers.
  var cookieMode = null;

  function askForToken() {
    showTokenForm(true);
    $("view").hidden = true;
    $("detail").hidden = true;
    say("Enter the bearer token you call the API with to see its usage. It is kept in this tab only.");
  }

  function render() {
    var trying = !currentToken() && cookieMode === null;
    if (!currentToken() && !cookieMode && !trying) {
      askForToken();
      return;
    }
    var state = readState();
    if (trying) {
      askForToken();
    } else {
      showTokenForm(false);
      if (cookieMode && !currentToken()) $("forget").hidden = true;
      if (state.record) {
        showRecord(state.record);
        return;
      }
      $("detail").hidden = true;
      $("view").hidden = false;
      say("");
    }
    var form = $("filters");
    FILTERS.forEach(function (name) { form.elements[name].value = state[name]; });
    Array.prototype.forEach.call(document.querySelectorAll("#ranges button"), function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
    });
    var shown = period(state);
    var range = shown.range;
    var until = shown.until;
    var since = shown.since;
    $("from").value = state.range === "custom" ? state.from : "";
    $("to").value = state.range === "custom" ? state.to : "";
    // Three reads for the first view: the routes (whose `total` is the
    // headline), the buckets of this period and the previous one (the chart,
    // the latency and the comparison), and the list. The previous period is
    // the same length and ends where this period's first bucket starts.
    var split = new Date(Math.floor(since.getTime() / range.step) * range.step);
    var before = new Date(split.getTime() - range.ms);
    var mine = ++generation;
    var started = performance.now();
    listBase = listParams(state, since, shown.now ? null : until);
    var first = new URLSearchParams(listBase);
    first.set("limit", String(PAGE_SIZE));
    document.body.setAttribute("aria-busy", "true");
    Promise.all([
      getJson("/summary", summaryParams(state, before, until, range.interval, "status")),
      getJson("/summary", summaryParams(state, since, until, "month", "route")),
      getJson("", first)
    ]).then(function (answers) {
      if (mine !== generation) return;
      if (trying) {
        // The app's session was enough: no token needed in this tab.
        cookieMode = true;
        document.body.dataset.cookie = "yes";
        showTokenForm(false);
        $("forget").hidden = true;
        $("view").hidden = false;
        say("");
      }
      $("data").hidden = false;
      var periods = splitBuckets(answers[0].buckets, split);
      headline(answers[1].total, periods.previous, range);
      chart(periods.current, split, until, range);
      latency(periods.current, split, until, range, false);
      routes(answers[1]);
      history(answers[2], false);
      emptyState(state, range, answers[2].requests.length > 0);
      document.body.dataset.ready = String(mine);
      probeAdmin(state, since, until);
      document.body.dataset.drawnMs = String(Math.round(performance.now() - started));
      refine(state, mine, before, split, until, range, periods.previous.requests, answers[1].total);
    }, function (err) {
      if (mine !== generation) return;
      if (trying && err instanceof ApiError && err.status === 401) {
        // No session: the token form, shown already, is the way in.
        cookieMode = false;
        document.body.dataset.cookie = "no";
        return;
      }
      // Nothing half-drawn: the message says why; a range button tries again.
      $("data").hidden = true;
      fail(err);
    }).then(function () { document.body.removeAttribute("aria-busy"); });
  }

  // After the first view, two reads make its estimates exact: the previous
  // period alone (its `total` p95, for the headline's comparison) and this
  // period's slots without groups (the latency chart's own percentiles).
  function refine(state, mine, before, split, until, range, previousRequests, now) {
    var previous = previousRequests
      ? getJson("/summary", summaryParams(state, before, split, "month"))
      : Promise.resolve(null);
    Promise.all([
      previous,
      getJson("/summary", summaryParams(state, split, until, range.interval))
    ]).then(function (answers) {
      if (mine !== generation) return;
      var d = $("delta-p95");
      if (d && answers[0]) {
        d.textContent = delta(now.requests ? now.durationUs.p95 : null,
          answers[0].total.requests ? answers[0].total.durationUs.p95 : null, range);
      }
      latency(answers[1].buckets, split, until, range, true);
      document.body.dataset.refined = String(mine);
    }, function () {
      // The first view stands; its estimates stay marked as such.
      var d = $("delta-p95");
      if (mine === generation && d && d.textContent === "…") d.textContent = "";
    });
  }

  function showTokenForm(show) {
    $("token").value = "";
    $("token").parentNode.querySelector("label").hidden = !show;
    $("token").hidden = !show;
    $("token-form").querySelector("button[type=submit]").hidden = !show;
    $("forget").hidden = show;
  }

  function open(row) {
    if (!row || !row.dataset.id) return;
    var state = readState();
    state.record = row.dataset.id;
    writeState(state);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("token-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var value = $("token").value.trim();
      if (!value) {
        say("Paste a token first.", true);
        return;
      }
      if (!/^[\x20-\x7e]+$/.test(value)) {
        say("A token is made of printable ASCII characters only; check what was pasted.", true);
        return;
      }
      setToken(value);
      render();
    });
    $("forget").addEventListener("click", function () {
      setToken("");
      render();
    });
    $("ranges").addEventListener("click", function (e) {
      var button = e.target.closest("button[data-range]");
      if (!button) return;
      var state = readState();
      state.range = button.dataset.range;
      writeState(state);
    });
    $("consumer").addEventListener("change", function (e) {
      var state = readState();
      state.consumer = e.target.value;
      writeState(state);
    });
    $("custom").addEventListener("submit", function (e) {
      e.preventDefault();
      var state = readState();
      state.from = $("from").value;
      state.to = $("to").value;
      if (!customPeriod(state)) {
        say("Choose a start and an end, the start before the end.", true);
        return;
      }
      state.range = "custom";
      writeState(state);
    });
    $("filters").addEventListener("submit", function (e) {
      e.preventDefault();
      var state = readState();
      FILTERS.forEach(function (name) { state[name] = e.target.elements[name].value.trim(); });
      writeState(state);
    });
    $("export-csv").addEventListener("click", function () { exportAs("csv"); });
    $("export-ndjson").addEventListener("click", function () { exportAs("ndjson"); });
    $("more").addEventListener("click", loadMore);
    $("live").addEventListener("change", function (e) { setLive(e.target.checked); });
    $("routes").tHead.addEventListener("click", function (e) {
      var button = e.target.closest("button[data-sort]");
      if (!button) return;
      var key = button.dataset.sort;
      routeSort = { key: key, dir: routeSort.key === key ? -routeSort.dir : (key === "route" ? 1 : -1) };
      drawRoutes();
    });
    var rows = $("history").tBodies[0];
    rows.addEventListener("click", function (e) { open(e.target.closest("tr")); });
    rows.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        open(e.target.closest("tr"));
      }
    });
    $("detail").addEventListener("keydown", function (e) {
      if (e.key === "Escape") $("close").click();
    });
    $("close").addEventListener("click", function () {
      var state = readState();
      var id = state.record;
      state.record = "";
      writeState(state);
      setTimeout(function () {
        var row = document.querySelector("#history tr[data-id]");
        Array.prototype.some.call(document.querySelectorAll("#history tr[data-id]"), function (tr) {
          if (tr.dataset.id === id) { row = tr; return true; }
          return false;
        });
        if (row) row.focus();
      }, 50);
    });
    window.addEventListener("hashchange", render);
    render();
  });
})();
