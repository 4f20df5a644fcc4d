// Companion fleet page: the cluster's nodes and figures, live over /ops/ws.
//
// The token comes from ?token= (an operator token: `companion token NAME --device operator`).
// The server sends the whole fleet view once a second; the page keeps the last two minutes
// of a few series and draws them as sparklines (inline SVG, by hand, no libraries). The
// socket reconnects with full-jitter backoff and stops when the token has expired.
"use strict";

(() => {
  const HISTORY = 120; // points per sparkline: two minutes at one view a second
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["phone", "watch", "debug", "service"];

  const $ = (id) => document.getElementById(id);
  const page = {
    token: new URLSearchParams(location.search).get("token") || "",
    claims: null,
    socket: null,
    attempt: 0,
    stopped: false,
    views: 0,
    last: null,
    lastAt: 0,
    series: {}, // name -> [number|null], oldest first
  };
  window.companionOps = page; // for the console and for tests

  // -- token and connection ------------------------------------------------------------

  function readClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) throw new Error("not a token");
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
  }

  function showProblem(text) {
    $("problem").textContent = text;
    $("problem").hidden = !text;
  }

  function setStatus(status, detail) {
    const pill = $("status");
    pill.textContent = detail ? `${status} (${detail})` : status;
    pill.className = `pill pill-${status}`;
    document.body.dataset.status = status;
  }

  function connect() {
    if (page.stopped) return;
    if (page.claims.exp && page.claims.exp * 1000 < Date.now()) {
      stop("token expired: make a new one with companion token NAME --device operator");
      return;
    }
    setStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // The token travels as a subprotocol, not in the URL: servers log handshake URLs.
    const socket = new WebSocket(`${scheme}://${location.host}/ops/ws`, ["companion.ops", `bearer.${page.token}`]);
    page.socket = socket;
    socket.onopen = () => {
      page.attempt = 0;
      showProblem("");
      setStatus("open");
    };
    socket.onmessage = (event) => {
      let view;
      try {
        view = JSON.parse(event.data);
      } catch (err) {
        return; // not ours to show: the server only sends JSON views
      }
      render(view);
    };
    socket.onclose = (event) => {
      if (page.socket !== socket) return;
      page.socket = null;
      if (event.code === 4001) return stop("token expired");
      if (event.code === 1008 && event.reason) showProblem(`closed: ${event.reason}`);
      setStatus("closed", String(event.code));
      // Full jitter: a fleet of open pages does not come back all at once.
      const delay = Math.random() * Math.min(10000, 250 * 2 ** page.attempt++);
      setTimeout(connect, delay);
    };
  }

  function stop(text) {
    page.stopped = true;
    showProblem(text);
    setStatus("stopped");
  }

  // -- formatting ----------------------------------------------------------------------

  const num = (v, digits = 0) =>
    v === null || v === undefined || Number.isNaN(v)
      ? "–"
      : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const ms = (v) => (v === null || v === undefined ? "–" : `${num(v, v < 10 ? 1 : 0)} ms`);
  const usd = (v) => `$${num(v, v < 1 ? 4 : 2)}`;

  function bytes(v) {
    if (!v) return "–";
    const mib = v / 1048576;
    return mib >= 1024 ? `${num(mib / 1024, 1)} GiB` : `${num(mib, 0)} MiB`;
  }

  function duration(s) {
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function set(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function pill(td, ok, good, bad) {
    td.textContent = "";
    const span = document.createElement("span");
    span.className = `pill ${ok ? "pill-open" : "pill-closed"}`;
    span.textContent = ok ? good : bad;
    td.appendChild(span);
  }

  // -- rendering -----------------------------------------------------------------------

  function push(name, value) {
    const list = page.series[name] || (page.series[name] = []);
    list.push(value === undefined ? null : value);
    if (list.length > HISTORY) list.shift();
  }

  function render(view) {
    page.views += 1;
    page.last = view;
    page.lastAt = Date.now();
    const totals = view.totals || {};
    const gauges = view.gauges || {};
    const rates = view.rates || {};
    const conns = view.connections || {};
    const connTotal = Object.values(conns).reduce((a, b) => a + b, 0);

    set("nodes-up", String(view.nodes_up ?? "–"));
    set("nodes-down", String(view.nodes_down ?? "–"));
    $("nodes-down").parentElement.classList.toggle("alarm", (view.nodes_down || 0) > 0);
    set("membership", view.membership_ok === false ? "membership unavailable: showing this node" : "");

    set("conn-total", num(connTotal));
    set("conn-kinds", KINDS.filter((k) => conns[k]).map((k) => `${k} ${num(conns[k])}`).join(" · ") || "none");
    set("deltas-rate", num(rates.deltas_per_s, 1));
    set("pushes-rate", num(rates.pushes_per_s, 1));
    set("deltas-total", num(totals.deltas_published));
    const pushMs = view.push_ms || {};
    set("push-p99", ms(pushMs.p99));
    set("push-p50", ms(pushMs.p50));
    set("push-p90", ms(pushMs.p90));
    $("tile-push").classList.toggle("alarm", (pushMs.p99 || 0) > 50);
    set("frames-rate", num(rates.frames_per_s, 1));
    set("frames-total", num(totals.frames_accepted));
    const ackMs = view.ack_ms || {};
    set("ack-p99", ms(ackMs.p99));
    set("ack-p50", ms(ackMs.p50));
    set("ack-p90", ms(ackMs.p90));
    set("analyses-rate", num(rates.analyses_per_s, 2));
    set("analysis-queue", num(gauges.analysis_queue));
    set("devices-behind", num(gauges.devices_behind));
    set("analysis-running", num(gauges.analysis_running));
    set("llm-spend", usd(totals.llm_cost_usd || 0));
    set("llm-rate", usd(view.llm_usd_per_h || 0));
    set("llm-calls", num(totals.llm_calls));
    set("llm-budget", num(totals.llm_fallbacks_budget));
    const spend = view.spend_by_tier || {};
    const perHour = view.usd_per_h_by_tier || {};
    set("spend-tiers", Object.keys(spend).sort()
      .map((t) => `${t} ${usd(spend[t])} (${usd(perHour[t] || 0)}/h)`).join(" · ") || "none");
    set("avatars-ok", num(totals.avatar_ok));
    set("avatars-error", num(totals.avatar_error));
    set("avatars-waiting", num(gauges.avatar_waiting));
    set("cache-ratio", view.cache_hit_ratio === null || view.cache_hit_ratio === undefined
      ? "–" : `${num(view.cache_hit_ratio * 100, 0)}%`);
    const dead = (view.nodes || []).filter((n) => n.up).reduce((a, n) => a + (n.dead_letters_today || 0), 0);
    set("dead-letters", num(dead));
    $("tile-dead").classList.toggle("alarm", dead > 0);
    set("errors-rate", num(rates.errors_per_s, 2));
    set("store-errors", num(totals.store_errors));
    set("http-errors", num(totals.http_errors));

    push("connections", connTotal);
    push("deltas", rates.deltas_per_s);
    push("push", pushMs.p99);
    push("frames", rates.frames_per_s);
    push("ack", ackMs.p99);
    push("queue", gauges.analysis_queue);
    push("llm", view.llm_usd_per_h);
    push("avatars", rates.avatars_per_s);
    push("errors", rates.errors_per_s);
    for (const box of document.querySelectorAll(".spark")) {
      drawSpark(box, page.series[box.dataset.series] || [], Number(box.dataset.target || 0));
    }
    renderNodes(view);
    renderKinds(conns, connTotal);
    renderErrors(view.errors || []);
    tick();
  }

  function renderNodes(view) {
    const body = $("nodes");
    body.textContent = "";
    for (const node of view.nodes || []) {
      const row = document.createElement("tr");
      row.dataset.node = node.name;
      row.dataset.up = String(node.up);
      row.className = node.up ? "" : "down";
      const name = cell(row, node.name, "name");
      if (node.id === view.self) {
        const me = document.createElement("span");
        me.className = "badge";
        me.textContent = "this node";
        name.append(" ", me);
      }
      pill(cell(row, "", "state"), node.up, "up", "down");
      cell(row, node.version);
      cell(row, node.up ? duration(node.uptime_s) : "–");
      const kinds = KINDS.filter((k) => node.connections[k]).map((k) => `${k} ${num(node.connections[k])}`);
      cell(row, `${num(node.connections_total)}${kinds.length ? ` (${kinds.join(", ")})` : ""}`, "conns");
      cell(row, bytes(node.rss_bytes));
      // A down node's last health is history: shown greyed (the row's style), not green.
      pill(cell(row, ""), node.broker_ok, node.broker, `${node.broker} down`);
      pill(cell(row, ""), node.store_ok, node.store, `${node.store} down`);
      cell(row, num(node.dead_letters_today));
      cell(row, node.up ? `${num(node.last_seen_s, 1)} s ago` : `gone ${duration(node.last_seen_s)} ago`, "seen");
      body.appendChild(row);
    }
  }

  function renderKinds(conns, total) {
    const box = $("kinds");
    box.textContent = "";
    for (const kind of KINDS) {
      const n = conns[kind] || 0;
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.kind = kind;
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = kind;
      const track = document.createElement("div");
      track.className = "bar-track";
      const fill = document.createElement("div");
      fill.className = `bar-fill kind-${kind}`;
      fill.style.width = `${total ? (100 * n) / total : 0}%`;
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = num(n);
      row.append(label, track, value);
      box.appendChild(row);
    }
  }

  function renderErrors(errors) {
    const body = $("errors");
    body.textContent = "";
    if (!errors.length) {
      const row = document.createElement("tr");
      cell(row, "none", "muted").colSpan = 5;
      body.appendChild(row);
      return;
    }
    for (const e of errors) {
      const row = document.createElement("tr");
      cell(row, new Date(e.t_ms).toLocaleTimeString());
      cell(row, e.node);
      cell(row, e.level, `level-${e.level}`);
      cell(row, e.source);
      cell(row, e.exception || "–");
      body.appendChild(row);
    }
  }

  function drawSpark(box, values, target) {
    const W = 120;
    const H = 32;
    const present = values.filter((v) => v !== null);
    const top = Math.max(1e-9, ...present, target ? target * 1.2 : 0);
    // The first points fill a shorter axis, so a fresh page shows a line, not a dot.
    const span = Math.max(values.length, 30);
    const x = (i) => (W * i) / (span - 1);
    const y = (v) => H - 2 - ((H - 4) * v) / top;
    const offset = span - values.length;
    let line = "";
    values.forEach((v, i) => {
      if (v === null) return;
      line += `${line ? "L" : "M"}${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`;
    });
    let svg = box.firstElementChild;
    if (!svg) {
      svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
      svg.setAttribute("preserveAspectRatio", "none");
      for (const cls of ["area", "target", "line"]) {
        const path = document.createElementNS(SVG, "path");
        path.setAttribute("class", cls);
        svg.appendChild(path);
      }
      box.appendChild(svg);
    }
    const [area, goal, path] = svg.children;
    path.setAttribute("d", line);
    const firstX = x(offset + values.findIndex((v) => v !== null));
    area.setAttribute("d", line ? `${line}L${x(span - 1)},${H}L${firstX.toFixed(1)},${H}Z` : "");
    goal.setAttribute("d", target ? `M0,${y(target).toFixed(1)}L${W},${y(target).toFixed(1)}` : "");
  }

  function tick() {
    if (page.lastAt) set("updated", `${Math.max(0, Math.round((Date.now() - page.lastAt) / 1000))} s ago`);
  }

  // -- start ---------------------------------------------------------------------------

  if (!page.token) {
    stop("no token: open /ops?token=… with `companion token NAME --device operator`");
    return;
  }
  try {
    page.claims = readClaims(page.token);
  } catch (err) {
    stop(`bad token: ${err.message}`);
    return;
  }
  if (page.claims.dev !== "operator") {
    stop(`a ${page.claims.dev} token cannot open the fleet page: use --device operator`);
    return;
  }
  $("who").textContent = `operator ${page.claims.sub}`;
  setInterval(tick, 1000);
  connect();
})();
