// Companion debug page: one user's live state, frames and deltas over the WebSocket.
//
// The token comes from ?token= (a debug token of the user; the user is read from its
// payload, the server verifies it). The socket reconnects under the clients' one reconnect
// rule (server/protocol/codes.py's Disconnects, clients/connect/failover.py's RECONNECT backoff;
// tests/clients/test_reconnect_rule.py checks the copy below stays equal): soon after
// 1001/1012/1013, full-jitter backoff up to 5 s otherwise, a stop on 4001/4003. A delta
// applies only on the version it was made for; otherwise the page asks for a snapshot
// with hello{since}. No libraries: the chart is drawn by hand on a <canvas>.
//
// Acks across hops: the Devices table is GET /v1/users/{id}/devices (each device's last
// seen version, red when more than one behind), the Commands table GET .../commands (the
// commands of the companion's actions and their outcomes). Both are read again after every
// snapshot, delta, commands or command_ack message, and every REFRESH_MS; one read at a time.
"use strict";

(() => {
  const MAX_POINTS = 240;
  const MAX_LOG = 100;
  const PING_MS = 15000;
  const REFRESH_MS = 5000;
  // The reconnect rule (a copy of server/protocol/codes.py's table, checked by a test).
  const STOP_CODES = { 4001: "token expired", 4003: "forbidden" };
  const SOON_CODES = [1001, 1012, 1013];
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 5000;
  const SOON_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const page = {
    token: new URLSearchParams(location.search).get("token") || "",
    claims: null,
    socket: null,
    attempt: 0,
    reconnects: 0,
    stopped: false,
    state: null, // the last snapshot with every delta applied
    points: [], // {ts, hr, hrv, steps}, oldest first
    deltas: 0,
    pinger: null,
    devices: [], // GET /v1/users/{id}/devices: who has shown which version
    commands: [], // GET /v1/users/{id}/commands: newest first
    refreshing: false,
    refreshAgain: false,
  };
  window.companionDebug = page; // for the console and for tests
  // The decision timeline (timeline.js, loaded first); a no-op when it is missing.
  const timeline = () =>
    window.companionTimeline || { start() {}, onDelta() {}, onSnapshot() {} };

  // -- token ---------------------------------------------------------------------------

  function readClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) throw new Error("not a token");
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(json);
    if (typeof claims.sub !== "string") throw new Error("the token names no user");
    return claims;
  }

  function showProblem(text) {
    const box = $("problem");
    box.textContent = text;
    box.hidden = !text;
  }

  function setStatus(status, detail) {
    const pill = $("status");
    pill.textContent = detail ? `${status} (${detail})` : status;
    pill.className = `pill pill-${status}`;
    document.body.dataset.status = status;
  }

  // -- connection ----------------------------------------------------------------------

  function connect() {
    if (page.stopped) return;
    const exp = page.claims.exp;
    if (typeof exp === "number" && exp * 1000 < Date.now()) {
      stop("token expired: open the page with a fresh debug token");
      return;
    }
    setStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/ws?token=${encodeURIComponent(page.token)}`;
    const socket = new WebSocket(url);
    page.socket = socket;
    socket.onopen = () => {
      setStatus("open");
      showProblem("");
      hello();
      const ping = () => send({ op: "ping", t: Date.now() });
      ping();
      page.pinger = setInterval(ping, PING_MS);
    };
    socket.onmessage = (event) => {
      page.attempt = 0; // the server answered: the next loss starts the backoff afresh
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        showProblem(`unreadable message: ${err}`);
        return;
      }
      onMessage(message);
    };
    socket.onclose = (event) => {
      clearInterval(page.pinger);
      if (page.socket !== socket) return;
      page.socket = null;
      if (STOP_CODES[event.code]) {
        stop(`server closed the connection: ${STOP_CODES[event.code]} (${event.code})`);
        return;
      }
      // Full jitter: anywhere in [0, min(cap, base * 2^attempt)); soon after a restart. The
      // page has one server (its own origin), so every failure ends a round of the rule.
      const soon = SOON_CODES.includes(event.code) && page.attempt === 0;
      const ceiling = soon
        ? SOON_MS
        : Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** page.attempt);
      const delay = Math.random() * ceiling;
      page.attempt += 1;
      page.reconnects += 1;
      $("reconnects").textContent = String(page.reconnects);
      setStatus("closed", `${event.code}; retry in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(connect, delay);
    };
  }

  function stop(reason) {
    page.stopped = true;
    setStatus("stopped");
    showProblem(reason);
  }

  function send(message) {
    if (page.socket && page.socket.readyState === WebSocket.OPEN) {
      page.socket.send(JSON.stringify(message));
    }
  }

  function hello() {
    const message = { op: "hello", client: "companion-debug/1" };
    if (page.state) message.since = page.state.version;
    send(message);
  }

  // -- messages ------------------------------------------------------------------------

  function onMessage(message) {
    switch (message.op) {
      case "snapshot":
        page.state = message;
        renderState();
        timeline().onSnapshot(page.state);
        refreshHops();
        break;
      case "delta":
        onDelta(message);
        refreshHops();
        break;
      case "commands":
      case "command_ack":
        refreshHops();
        break;
      case "frames":
        onFrames(message);
        break;
      case "pong":
        $("rtt").textContent = `${Math.max(0, Date.now() - message.t)} ms`;
        break;
      case "error":
        showProblem(`server error ${message.code}: ${message.message}`);
        break;
      default:
        break; // uptodate, ack: nothing to show
    }
  }

  function onDelta(delta) {
    const latency = Date.now() - delta.t;
    const state = page.state;
    if (!state || delta.version <= state.version) return; // stale
    const base = delta.base === undefined ? delta.version - 1 : delta.base;
    if (base !== state.version) {
      hello(); // a delta was missed: ask for a snapshot
      return;
    }
    Object.assign(state, delta.changes);
    state.version = delta.version;
    state.state_hash = delta.state_hash;
    state.updated_at = delta.t;
    renderState();
    logDelta(delta, latency);
    timeline().onDelta(delta, state);
  }

  function onFrames(summary) {
    const seen = new Set(page.points.map((p) => p.ts));
    for (const point of summary.points || []) {
      if (!seen.has(point.ts)) page.points.push(point);
    }
    page.points.sort((a, b) => a.ts - b.ts);
    page.points.splice(0, Math.max(0, page.points.length - MAX_POINTS));
    $("points").textContent = `${page.points.length} points`;
    drawChart();
  }

  // -- rendering -----------------------------------------------------------------------

  function renderState() {
    const s = page.state;
    $("state").textContent = s.state;
    $("mood").textContent = s.mood;
    const source = $("source");
    source.textContent = s.source;
    source.className = `badge badge-${s.source}`;
    const energy = Math.max(0, Math.min(100, Number(s.energy) || 0));
    $("energy-bar").style.width = `${energy}%`;
    $("energy").textContent = `energy ${energy}`;
    $("reasoning").textContent = s.reasoning || "–";
    const actions = $("actions");
    actions.replaceChildren(
      ...(s.actions || []).map((a) => {
        const li = document.createElement("li");
        li.textContent = a.replace(/_/g, " ");
        return li;
      }),
    );
    renderHealth(s.health);
    $("version").textContent = String(s.version);
    $("hash").textContent = s.state_hash;
    $("updated").textContent = s.updated_at ? new Date(s.updated_at).toLocaleTimeString() : "–";
    const clipStatus = s.video_status && s.video_status !== "none" ? ` · clip: ${s.video_status}` : "";
    $("avatar-status").textContent = `avatar: ${s.avatar_status}${clipStatus}`;
    showAvatar(s.image_url, s.video_url);
  }

  // Health metrics as of this version (brain/health.py): days oldest first, "–" unknown.
  function renderHealth(health) {
    const h = health || {};
    const known = (value) => (value === null || value === undefined ? "–" : String(value));
    const days = (values, unit) =>
      values && values.length ? values.map((v) => `${v}${unit}`).join(" → ") : "–";
    $("health-fatigue").textContent = known(h.fatigue_score);
    const score = h.stress_score === null || h.stress_score === undefined ? "" : ` (${h.stress_score})`;
    $("health-stress").textContent = h.stress_level ? `${h.stress_level}${score}` : "–";
    $("health-sleep").textContent = days(h.sleep_hours, " h");
    $("health-hrv").textContent = days(h.hrv_trend, " ms");
    $("health-budget").textContent = known(h.energy_budget);
    $("health").dataset.known = health ? "yes" : "no";
  }

  // The clip when there is one, else the still. An animated WebP or GIF plays in the <img>;
  // an MP4 or WebM (Veo) needs the <video>.
  function showAvatar(imageUrl, videoUrl) {
    const avatar = $("avatar");
    const clip = $("avatar-clip");
    const isVideo = Boolean(videoUrl) && /\.(mp4|webm)(\?|$)/.test(videoUrl);
    const still = (!isVideo && videoUrl) || imageUrl || "/debug/static/avatar.svg";
    if (avatar.getAttribute("src") !== still) avatar.setAttribute("src", still);
    if (isVideo) {
      if (clip.getAttribute("src") !== videoUrl) clip.setAttribute("src", videoUrl);
    } else if (clip.hasAttribute("src")) {
      clip.removeAttribute("src");
      clip.load();
    }
    clip.hidden = !isVideo;
    avatar.hidden = isVideo;
  }

  function logDelta(delta, latency) {
    page.deltas += 1;
    $("delta-count").textContent = String(page.deltas);
    const row = document.createElement("tr");
    const changes = Object.entries(delta.changes)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join("  ");
    const cells = [
      new Date().toLocaleTimeString(),
      `v${delta.version}`,
      changes,
      `${Math.round(latency)} ms`,
    ];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (i === 2) cell.className = "changes";
      if (i === 3) cell.className = "latency";
      row.append(cell);
    });
    const log = $("delta-log");
    log.prepend(row);
    while (log.children.length > MAX_LOG) log.lastChild.remove();
  }

  // -- devices and commands ------------------------------------------------------------

  async function getJson(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${page.token}` } });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }

  async function refreshHops() {
    if (page.refreshing) {
      page.refreshAgain = true; // one read at a time; one more after it
      return;
    }
    page.refreshing = true;
    const user = encodeURIComponent(page.claims.sub);
    try {
      const [devices, commands] = await Promise.all([
        getJson(`/v1/users/${user}/devices`),
        getJson(`/v1/users/${user}/commands`),
      ]);
      page.devices = devices.devices;
      page.commands = commands.commands;
      renderDevices(devices.version);
      renderCommands();
    } catch (err) {
      $("devices-summary").textContent = `not read: ${err.message}`;
    } finally {
      page.refreshing = false;
      if (page.refreshAgain) {
        page.refreshAgain = false;
        refreshHops();
      }
    }
  }

  function row(cells, classes) {
    const tr = document.createElement("tr");
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (classes[i]) td.className = classes[i];
      tr.append(td);
    });
    return tr;
  }

  function renderDevices(version) {
    const behind = page.devices.filter((d) => d.behind > 1).length;
    $("devices-summary").textContent =
      `${page.devices.length} devices at v${version}; ${behind} behind by more than one`;
    $("device-list").replaceChildren(
      ...page.devices.map((d) =>
        row(
          [d.device, d.kind, `v${d.seen_version}`, new Date(d.seen_at).toLocaleTimeString(), String(d.behind)],
          [null, null, null, null, d.behind > 1 ? "behind" : null],
        ),
      ),
    );
  }

  function renderCommands() {
    const pending = page.commands.filter((c) => c.outcome === "pending").length;
    $("commands-summary").textContent = `${page.commands.length} shown; ${pending} pending`;
    $("command-list").replaceChildren(
      ...page.commands.map((c) =>
        row(
          [
            new Date(c.issued_at).toLocaleTimeString(),
            c.kind.replace(/_/g, " "),
            JSON.stringify(c.params),
            `v${c.version}`,
            new Date(c.expires_at).toLocaleTimeString(),
            c.outcome,
            c.device || "–",
          ],
          [null, "command-kind", "changes", null, null, `outcome outcome-${c.outcome}`, null],
        ),
      ),
    );
  }

  // -- chart -----------------------------------------------------------------------------

  function drawChart() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 260;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const styles = getComputedStyle(document.documentElement);
    const color = (name) => styles.getPropertyValue(name).trim();
    const pad = { left: 40, right: 40, top: 10, bottom: 22 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    const points = page.points;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");
    ctx.strokeStyle = color("--line");
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const y = pad.top + (h * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(pad.left + w, y);
      ctx.stroke();
      ctx.fillText(String(180 - 35 * i), 6, y + 4); // HR axis: 40..180 bpm
      ctx.fillText(String(150 - (150 * i) / 4), pad.left + w + 6, y + 4); // HRV: 0..150 ms
    }
    if (points.length === 0) {
      ctx.fillText("waiting for frames…", pad.left + 10, pad.top + h / 2);
      return;
    }
    const t0 = points[0].ts;
    const t1 = Math.max(points[points.length - 1].ts, t0 + 1);
    const x = (ts) => pad.left + ((ts - t0) / (t1 - t0)) * w;
    const maxSteps = Math.max(1, ...points.map((p) => p.steps || 0));
    const barWidth = Math.max(1, Math.min(8, w / points.length - 1));
    ctx.fillStyle = color("--steps");
    for (const p of points) {
      if (!p.steps) continue;
      const bh = (p.steps / maxSteps) * h * 0.3;
      ctx.fillRect(x(p.ts) - barWidth / 2, pad.top + h - bh, barWidth, bh);
    }
    const line = (field, lo, hi, stroke) => {
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      for (const p of points) {
        if (p[field] === null || p[field] === undefined) continue;
        const y = pad.top + h - ((p[field] - lo) / (hi - lo)) * h;
        if (started) ctx.lineTo(x(p.ts), y);
        else ctx.moveTo(x(p.ts), y);
        started = true;
      }
      ctx.stroke();
    };
    line("hr", 40, 180, color("--hr"));
    line("hrv", 0, 150, color("--hrv"));
    ctx.fillStyle = color("--muted");
    ctx.fillText(new Date(t0).toLocaleTimeString(), pad.left, height - 6);
    const last = new Date(t1).toLocaleTimeString();
    ctx.fillText(last, pad.left + w - ctx.measureText(last).width, height - 6);
  }

  // -- inject buttons ----------------------------------------------------------------------

  async function inject(kind, button) {
    const result = $("inject-result");
    button.disabled = true;
    result.textContent = `injecting ${kind}…`;
    try {
      const response = await fetch(`/v1/demo/users/${encodeURIComponent(page.claims.sub)}/scenario`, {
        method: "POST",
        headers: { Authorization: `Bearer ${page.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ kind, minutes: 10 }),
      });
      const body = await response.json();
      result.textContent = response.ok
        ? `${kind}: ${body.accepted} frames injected`
        : `${kind}: ${response.status} ${body.detail || body.title}`;
    } catch (err) {
      result.textContent = `${kind}: ${err}`;
    } finally {
      button.disabled = false;
    }
  }

  // -- start ---------------------------------------------------------------------------------

  function start() {
    for (const button of document.querySelectorAll("#inject-buttons button")) {
      button.addEventListener("click", () => inject(button.dataset.kind, button));
    }
    window.addEventListener("resize", drawChart);
    drawChart();
    if (!page.token) {
      stop("open this page as /debug?token=<a debug token>: companion token USER --device debug");
      return;
    }
    try {
      page.claims = readClaims(page.token);
    } catch (err) {
      stop(`bad token: ${err.message}`);
      return;
    }
    $("who").textContent = `user ${page.claims.sub} (${page.claims.dev} token)`;
    timeline().start(page.claims.sub, page.token);
    connect();
    setInterval(refreshHops, REFRESH_MS);
  }

  start();
})();
