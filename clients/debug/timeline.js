// Companion debug page: the decision timeline — the user's last versions, who decided each
// and why (GET /v1/users/{id}/history), kept live by the deltas the page already receives.
//
// A delta shows at once as a provisional entry built from the page's state (the server
// records the event just after it publishes the delta); the page then reads the history
// since the newest recorded version and replaces provisional entries with the recorded
// ones, which add the commit's cause, model, cost and features. Each entry is a <details>:
// the summary line shows time, version, state/mood and who decided, hovering shows the
// reasoning, opening it shows everything. debug.js calls start, onSnapshot and onDelta.
"use strict";

(() => {
  const MAX_ENTRIES = 20;
  const CONFIRM_MS = [250, 1000, 4000]; // re-reads until a provisional entry is recorded
  const AVATAR_FIELDS = ["image_url", "avatar_status", "video_url", "video_status"];

  const timeline = {
    user: null,
    token: null,
    entries: new Map(), // version -> event (with .provisional when built from a delta)
    reading: null, // the read in flight, so reads never overlap
    error: "",
  };

  const $ = (id) => document.getElementById(id);

  function newestRecorded() {
    let newest = null;
    for (const [version, event] of timeline.entries) {
      if (!event.provisional && (newest === null || version > newest)) newest = version;
    }
    return newest;
  }

  async function read(params) {
    const query = new URLSearchParams({ limit: String(MAX_ENTRIES), ...params });
    const url = `/v1/users/${encodeURIComponent(timeline.user)}/history?${query}`;
    const response = await fetch(url, { headers: { Authorization: `Bearer ${timeline.token}` } });
    const body = await response.json();
    if (!response.ok) throw new Error(`${response.status} ${body.detail || body.title}`);
    return body.events;
  }

  // Read what was recorded since the newest recorded entry (everything on the first read).
  function refresh() {
    if (!timeline.user) return Promise.resolve();
    if (timeline.reading) return timeline.reading;
    const since = newestRecorded();
    timeline.reading = read(since === null ? {} : { since: String(since) })
      .then((events) => {
        timeline.error = "";
        for (const event of events) timeline.entries.set(event.version, event);
      })
      .catch((err) => {
        timeline.error = `history: ${err.message}`;
      })
      .finally(() => {
        timeline.reading = null;
        render();
      });
    return timeline.reading;
  }

  function confirm(version, attempt = 0) {
    if (attempt >= CONFIRM_MS.length) return;
    setTimeout(async () => {
      await refresh();
      const entry = timeline.entries.get(version);
      if (entry && entry.provisional) confirm(version, attempt + 1);
    }, CONFIRM_MS[attempt]);
  }

  function onDelta(delta, state) {
    if (timeline.entries.has(delta.version)) return;
    const changed = Object.keys(delta.changes);
    const byAvatar = changed.length > 0 && changed.every((f) => AVATAR_FIELDS.includes(f));
    timeline.entries.set(delta.version, {
      provisional: true,
      version: delta.version,
      at: delta.t,
      source: byAvatar ? "avatar" : state.source,
      state: state.state,
      mood: state.mood,
      energy: state.energy,
      reasoning: state.reasoning,
      changed,
    });
    render();
    confirm(delta.version);
  }

  // A snapshot after a reconnect may skip versions the page never saw as deltas.
  function onSnapshot(state) {
    const newest = newestRecorded();
    if (newest === null || state.version > newest) refresh();
  }

  // -- rendering -------------------------------------------------------------------------

  function text(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.textContent = content;
    return node;
  }

  function detailLines(event) {
    const lines = [["reasoning", event.reasoning || "–"]];
    if (event.cause) lines.push(["cause", event.cause]);
    if (event.changed && event.changed.length) lines.push(["changed", event.changed.join(", ")]);
    if (event.model) lines.push(["model", event.model]);
    if (typeof event.cost_usd === "number") lines.push(["cost", `$${event.cost_usd.toFixed(5)}`]);
    if (event.fallback) lines.push(["fallback", event.fallback]);
    if (event.features) {
      const shown = Object.entries(event.features).map(([k, v]) => `${k}=${v}`);
      lines.push(["features", shown.join("  ")]);
    }
    if (event.image_url) lines.push(["image", event.image_url]);
    if (event.provisional) lines.push(["", "from the delta; not recorded yet"]);
    return lines;
  }

  function entryNode(event) {
    const item = document.createElement("li");
    item.className = event.provisional ? "event provisional" : "event";
    item.dataset.version = String(event.version);
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.title = event.reasoning || "";
    summary.append(
      text("span", "event-time", new Date(event.at).toLocaleTimeString()),
      text("span", "event-version", `v${event.version}`),
      text("span", "event-state", `${event.state} / ${event.mood}`),
      text("span", `badge badge-${event.source} event-source`, event.source),
      text("span", "event-energy muted", `energy ${event.energy}`),
    );
    const list = document.createElement("dl");
    list.className = "event-details";
    for (const [name, value] of detailLines(event)) {
      list.append(text("dt", "", name), text("dd", "", value));
    }
    details.append(summary, list);
    item.append(details);
    return item;
  }

  function render() {
    const list = $("timeline");
    if (!list) return;
    const open = new Set(
      [...list.querySelectorAll("details[open]")].map((d) => d.parentElement.dataset.version),
    );
    const newest = [...timeline.entries.keys()].sort((a, b) => b - a).slice(0, MAX_ENTRIES);
    for (const version of timeline.entries.keys()) {
      if (!newest.includes(version)) timeline.entries.delete(version);
    }
    list.replaceChildren(
      ...newest.map((version) => {
        const node = entryNode(timeline.entries.get(version));
        if (open.has(String(version))) node.querySelector("details").open = true;
        return node;
      }),
    );
    $("timeline-count").textContent = `${newest.length} versions`;
    const problem = $("timeline-problem");
    problem.textContent = timeline.error;
    problem.hidden = !timeline.error;
  }

  function start(user, token) {
    timeline.user = user;
    timeline.token = token;
    return refresh();
  }

  window.companionTimeline = { start, onDelta, onSnapshot, refresh, state: timeline };
})();
