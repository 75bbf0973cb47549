// fledge web UI: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Pages (hash routes): #/ overview of every app, #/rollouts/ID one rollout,
// #/history past rollouts, #/groups rollout groups, #/groups/ID one group. Data
// comes from the API: GET /session (who am I, CSRF token), the GET /events
// server-sent-events stream (status snapshots, rollout changes, history entries),
// with GET /status polling while the stream is down. The stream carries no groups:
// an open group page reads GET /groups/ID every 2 seconds while the group moves.
// What the engine decides is shown as the server sends it, never worked out here:
// the actions offered (a rollout's, an app's and a group's `allowedActions`), the
// time left in a stage (`stageRemainingMs`), the checks and their limits (`analysis`).
// Every DOM node is built with createElement/textContent: no HTML from data.
'use strict';

// Errors the page meets, for people (the console) and for the browser tests.
window.__fledgeErrors = [];
window.addEventListener('error', (e) => {
  window.__fledgeErrors.push(String(e.message || e.type));
});
window.addEventListener('unhandledrejection', (e) => {
  window.__fledgeErrors.push('unhandled rejection: ' + String(e.reason));
});
document.addEventListener('securitypolicyviolation', (e) => {
  window.__fledgeErrors.push('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
});

const PHASE_CLASS = {
  Pending: 'pending', Progressing: 'progressing', Paused: 'paused',
  Succeeded: 'succeeded', Failed: 'failed', Aborted: 'aborted',
};
const PHASE_WORDS = {
  Pending: 'Pending', Progressing: 'Progressing', Paused: 'Paused',
  Succeeded: 'Succeeded', Failed: 'Failed (rolled back)', Aborted: 'Aborted (rolled back)',
};
const ACTIVE = new Set(['Pending', 'Progressing', 'Paused']);
const EVENT_WORDS = {
  Started: 'Started', StageStarted: 'Stage started', StageAdvanced: 'Stage passed',
  Promoted: 'Promoted', PromotionGate: 'Waiting for promotion hooks', Paused: 'Paused',
  Resumed: 'Resumed', Succeeded: 'Succeeded', Failed: 'Failed', Aborted: 'Aborted',
  Retried: 'Retried', AnalysisError: 'Metrics unavailable', AnalysisRecovered: 'Metrics back',
  RouteUnapplied: 'Router out of sync', RouteApplied: 'Router back in sync',
  HookFailed: 'Hook failed',
  // A group's own history.
  Created: 'Created', MemberStarted: 'Member started', MemberNotStarted: 'Member not started',
  Held: 'Held for the group', PromoteRequested: 'Promote asked', AbortRequested: 'Abort asked',
  MemberAborted: 'Member rolled back', MemberUndone: 'Member undone', MemberNotUndone: 'Undo not started',
};
const STATUS_WORDS = {
  pass: 'pass', fail: 'fail', notEnoughData: 'not enough data', undecided: 'undecided',
};

// How each action is offered: its button and what the confirmation says. Which
// actions a rollout offers is the server's `allowedActions` (its phase and the
// caller's role); "promote" gets two buttons, one for `?full=true`.
const ACTION_BUTTONS = [
  { id: 'promote', action: 'promote', label: 'Promote', path: 'promote', primary: true,
    title: 'Promote to the next stage?',
    text: (r) => `End stage ${r.stageIndex + 1} now and move ${r.app} to the next stage.` },
  { id: 'promote-full', action: 'promote', label: 'Promote fully', path: 'promote?full=true',
    title: 'Promote fully?',
    text: (r) => `Send 100% of ${r.app} traffic to ${r.version} now and make it the stable version.` },
  { id: 'pause', action: 'pause', label: 'Pause', path: 'pause',
    title: 'Pause the rollout?',
    text: (r) => `Hold ${r.app} at ${r.canaryWeight}% canary traffic. Health is still checked while paused.` },
  { id: 'resume', action: 'resume', label: 'Resume', path: 'resume',
    title: 'Resume the rollout?', text: (r) => `Continue ${r.app}'s rollout of ${r.version}.` },
  { id: 'abort', action: 'abort', label: 'Abort', path: 'abort', danger: true, reason: true,
    title: 'Abort and roll back?',
    text: (r) => `Send all of ${r.app} traffic back to the stable version now. ${r.version} gets 0%.` },
  { id: 'retry', action: 'retry', label: 'Retry', path: 'retry',
    title: 'Retry the rollout?', text: (r) => `Start ${r.app}'s rollout of ${r.version} again from stage 1.` },
];

// A group's actions are a rollout's, said of the whole group (no retry: a group
// that ended stays over). Which ones it offers is the group's `allowedActions`.
const GROUP_WORDS = {
  promote: { title: 'Promote the group?',
    text: (g) => (g.order === 'together'
      ? `End the current stage of every member of ${g.name} now: they move to their next stage together.`
      : `End the current stage of ${g.name}'s running member now.`) },
  'promote-full': { title: 'Promote the running member fully?',
    text: (g) => `Send all of the traffic of ${g.name}'s running member to its new version now; the next member in the order then starts.` },
  pause: { title: 'Pause the group?',
    text: (g) => `Hold every member of ${g.name} where it is; no member starts. Health is still checked while paused.` },
  resume: { title: 'Resume the group?', text: (g) => `Continue ${g.name}'s rollouts.` },
  abort: { title: 'Abort the group and roll back?',
    text: (g) => `Send every member of ${g.name} that has not succeeded back to its stable version now${g.rollbackSucceeded ? ', and undo the members that have' : ''}.` },
};
const GROUP_BUTTONS = ACTION_BUTTONS.filter((b) => GROUP_WORDS[b.id]).map((b) => Object.assign({}, b, GROUP_WORDS[b.id]));

// How an action on a whole app is offered, as ACTION_BUTTONS for a rollout's. Which
// ones an app offers is the server's `allowedActions` in its status; "undo" asks
// whether to go through the stages or switch at once (`?now=true`).
const APP_BUTTONS = [
  { id: 'undo', action: 'undo', label: 'Undo', danger: true, reason: true, now: true,
    path: (app, now) => `/apps/${encodeURIComponent(app.name)}/undo${now ? '?now=true' : ''}`,
    title: 'Undo the release?',
    text: (app) => `Start a rollout of ${app.name} back to ${app.previousStable}, the version that was stable before ${app.stable.version}.` },
];

// Where a rollout view came from: when it arrived (this browser's monotonic clock)
// and the stage its timing belongs to. Kept on the view under a symbol so it never
// meets an API field, and copied along with it by Object.assign.
const ARRIVED = Symbol('arrived');

function stamp(r) {
  r[ARRIVED] = { at: performance.now(), phase: r.phase, stageIndex: r.stageIndex };
  return r;
}

const state = {
  session: null,
  status: null, // the latest GET /status body
  rollouts: new Map(), // id -> rollout with events (fetched, then kept current live)
  points: new Map(), // rollout id -> chart points, as the server recorded them
  pointsLoading: new Set(), // rollout ids whose chart points are being fetched
  missing: new Map(), // rollout id -> why it could not be loaded
  signingOut: false, // between the Sign out click and the server's answer
  source: null,
  live: false,
  pollTimer: null,
  reconnectTimer: null,
  reconnectDelay: 1000,
  history: null, // {key, rows}
  groups: new Map(), // group id or name -> group, as last read
  groupList: null, // {rows, loaded, loading, stale}: the groups page's list
  groupOf: new Map(), // rollout id -> {group, undo}, for the groups read so far
  groupsAsked: new Set(), // rollout ids whose group has been looked for
  groupTimer: null,
  renderQueued: false,
};

// === small helpers ===

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === 'text') el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

function ms(t) { return typeof t === 'number' ? t : Date.parse(t); }

function pct(ratio, digits) {
  if (ratio === null || ratio === undefined) return '–';
  const v = ratio * 100;
  if (digits !== undefined) return v.toFixed(digits) + '%';
  return (v === 0 ? '0' : v < 0.1 ? v.toFixed(3) : v < 10 ? v.toFixed(2) : v.toFixed(1)) + '%';
}

function millis(v) {
  if (v === null || v === undefined) return '–';
  return (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + ' ms';
}

function count(n) { return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'); }

function rate(v) { return v === null || v === undefined ? '–' : (v < 10 ? v.toFixed(1) : Math.round(v)) + '/s'; }

function span(msValue) {
  if (msValue === null || msValue === undefined || !isFinite(msValue)) return '–';
  let secs = Math.max(0, Math.round(msValue / 1000));
  const d = Math.floor(secs / 86400); secs -= d * 86400;
  const hh = Math.floor(secs / 3600); secs -= hh * 3600;
  const mm = Math.floor(secs / 60); secs -= mm * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${secs}s`;
  return `${secs}s`;
}

function clock(t) {
  const d = new Date(ms(t));
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

function when(t) {
  const d = new Date(ms(t));
  return d.toLocaleString('en-GB', { hour12: false, year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// A value in a criterion's unit, written as the server writes it in its summaries
// and the CLI (three significant digits): `4.8%`, `512 ms`, `12.5 rps`.
function formatValue(unit, v) {
  if (v === null || v === undefined) return '–';
  switch (unit) {
    case 'ratio': return significant(v * 100) + '%';
    case 'seconds': return Math.abs(v) < 10 ? significant(v * 1000) + ' ms' : significant(v) + ' s';
    case 'perSecond': return significant(v) + ' rps';
    default: return significant(v);
  }
}

// Three significant digits (at least one decimal below 10), trailing zeros removed.
function significant(v) {
  const a = Math.abs(v);
  const decimals = a === 0 || a >= 100 ? 0 : Math.min(9, Math.max(1, 2 - Math.floor(Math.log10(a))));
  const text = v.toFixed(decimals);
  return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
}

function phaseBadge(phase) {
  return h('span', { class: `badge phase-${PHASE_CLASS[phase] || 'pending'}`, 'data-phase': phase, text: PHASE_WORDS[phase] || phase });
}

function toast(message, kind) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = 'toast ' + (kind || 'error');
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

// === API ===

async function api(path, options) {
  const opts = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (opts.method && opts.method !== 'GET' && state.session && state.session.csrfToken) {
    opts.headers['X-CSRF-Token'] = state.session.csrfToken;
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (resp.status === 401 && path !== '/login') {
    await loadSession();
    render();
  }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return body;
}

async function loadSession() {
  state.session = await api('/session');
  renderWho();
}

function signedIn() {
  return state.session && (!state.session.authRequired || state.session.signedIn);
}

// === live data ===

function connect() {
  if (state.source || !signedIn()) return;
  const es = new EventSource('/events');
  state.source = es;
  es.addEventListener('open', () => {
    state.live = true;
    state.reconnectDelay = 1000;
    stopPolling();
    renderConn();
  });
  es.addEventListener('status', (e) => onStatus(JSON.parse(e.data)));
  es.addEventListener('rollout', (e) => onRollout(JSON.parse(e.data)));
  es.addEventListener('event', (e) => onEvent(JSON.parse(e.data)));
  es.addEventListener('error', () => {
    state.live = false;
    renderConn();
    startPolling();
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the server answered an error): try again later,
      // waiting longer each time, and re-check the session in case it expired.
      es.close();
      state.source = null;
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = setTimeout(async () => {
        try { await loadSession(); } catch (_) { /* still down: the poller says so */ }
        if (signedIn()) connect(); else render();
      }, state.reconnectDelay);
      state.reconnectDelay = Math.min(state.reconnectDelay * 2, 15000);
    }
  });
}

function disconnect() {
  if (state.source) state.source.close();
  state.source = null;
  state.live = false;
  stopPolling();
  clearTimeout(state.reconnectTimer);
}

function startPolling() {
  if (state.pollTimer) return;
  const poll = async () => {
    if (!signedIn()) { stopPolling(); return; }
    try {
      onStatus(await api('/status'));
      const r = currentRolloutId();
      if (r) await fetchRollout(r);
      renderConn();
    } catch (e) {
      renderConn(e.message);
    }
  };
  poll();
  state.pollTimer = setInterval(poll, 3000);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function onStatus(status) {
  state.status = status;
  // The stream announces a rollout only when its history grows; its analysis moves
  // on every tick, so the open rollout page reads it, and the chart points recorded
  // since, again with each snapshot.
  const open = currentRolloutId();
  const shown = open && state.rollouts.get(open);
  if (shown && ACTIVE.has(shown.phase)) {
    fetchRollout(open).catch(() => {});
    loadPoints(shown);
  }
  for (const app of status.apps || []) {
    const r = app.rollout;
    if (!r) continue;
    const known = state.rollouts.get(r.id);
    // A rollout that moved on since its view arrived: read the new view, whose
    // timing belongs to the new stage.
    if (!known || known.phase !== r.phase || known.stageIndex !== r.stageIndex) {
      if (!(shown && shown.id === r.id)) fetchRollout(r.id).catch(() => {});
    }
  }
  scheduleRender();
}

function onRollout(view) {
  const known = state.rollouts.get(view.id);
  if (known) {
    const events = known.events;
    Object.assign(known, view);
    known.events = events;
    stamp(known);
  }
  // Keep the overview's summary in step without waiting for the next snapshot.
  if (state.status) {
    for (const app of state.status.apps || []) {
      if (app.rollout && app.rollout.id === view.id) {
        Object.assign(app.rollout, { phase: view.phase, stageIndex: view.stageIndex, canaryWeight: view.canaryWeight });
      }
    }
  }
  if (state.history && state.history.rows.some((r) => r.id === view.id)) state.history.stale = true;
  scheduleRender();
}

function onEvent(ev) {
  const known = state.rollouts.get(ev.rolloutId);
  if (known && known.events && !known.events.some((e) => e.id === ev.id)) {
    known.events.push(ev);
    known.events.sort((a, b) => a.seq - b.seq);
  }
  scheduleRender();
}

async function fetchRollout(id) {
  const r = stamp(await api(`/rollouts/${encodeURIComponent(id)}`));
  // A view read just before a decision can arrive after the stream brought that
  // decision's event: keep the events it does not have yet.
  const known = state.rollouts.get(r.id);
  if (known && known.events && r.events) {
    for (const e of known.events) if (!r.events.some((x) => x.id === e.id)) r.events.push(e);
    r.events.sort((a, b) => a.seq - b.seq);
  }
  state.rollouts.set(r.id, r);
  if (id !== r.id) state.rollouts.set(id, r);
  scheduleRender();
  return r;
}

// Fetches the chart points the server recorded for rollout `r` since the last one
// held (all of them the first time, however long ago: the server keeps them): the
// charts use the server's timestamps only.
async function loadPoints(r) {
  if (state.pointsLoading.has(r.id)) return;
  state.pointsLoading.add(r.id);
  const have = state.points.get(r.id) || [];
  const since = have.length ? have[have.length - 1].t + 1 : 0;
  try {
    const body = await api(`/ui/api/series?rollout=${encodeURIComponent(r.id)}&since=${since}`);
    let list = (state.points.get(r.id) || []).concat((body.points || []).filter((p) => p.rolloutId === r.id));
    // A page left open on a long rollout: take the server's bounded copy instead
    // (its older points merged), so the charts still reach back to the start.
    if (list.length > 4000) list = (await api(`/ui/api/series?rollout=${encodeURIComponent(r.id)}&since=0`)).points || [];
    state.points.set(r.id, list);
    scheduleRender();
  } catch (e) {
    // A later snapshot asks again; only a first load that fails is worth a note
    // (not one cut off by signing out).
    if (!state.points.has(r.id) && signedIn() && !state.signingOut) {
      state.points.set(r.id, []);
      window.__fledgeErrors.push('chart history: ' + e.message);
    }
  } finally {
    state.pointsLoading.delete(r.id);
  }
}

// === groups ===

// Keeps group `g` as read (under `asked` too, an id or a name it was asked by, and
// under every name it was read by before), its members' rollouts stamped like any
// rollout view, and notes which group each of its rollouts belongs to.
function keepGroup(g, asked) {
  for (const m of g.members || []) {
    if (m.rollout) {
      stamp(m.rollout);
      state.groupOf.set(m.rollout.id, { group: g, undo: false });
    }
    if (m.undoRolloutId) state.groupOf.set(m.undoRolloutId, { group: g, undo: true });
  }
  for (const [key, known] of state.groups) if (known.id === g.id) state.groups.set(key, g);
  state.groups.set(g.id, g);
  if (asked) state.groups.set(asked, g);
  scheduleRender();
  return g;
}

async function fetchGroup(id) {
  const g = keepGroup(await api(`/groups/${encodeURIComponent(id)}`), id);
  watchGroups();
  return g;
}

// The groups page's list: those still moving first, then the most recent others.
async function loadGroupList() {
  const list = state.groupList;
  if (!list || list.loading) return;
  list.loading = true;
  try {
    const [active, recent] = await Promise.all([api('/groups?active=true&limit=100'), api('/groups?limit=50')]);
    list.rows = active.concat(recent.filter((g) => !active.some((a) => a.id === g.id)));
    for (const g of list.rows) keepGroup(g);
  } catch (e) {
    if (!list.loaded) toast(`Cannot load the groups: ${e.message}`);
  } finally {
    list.loading = false;
    list.loaded = true;
    scheduleRender();
    watchGroups();
  }
}

// The group rollout `r` belongs to, looked for once among the latest groups (a
// rollout says nothing of its group); null when none of them has it.
function groupOfRollout(r) {
  if (state.groupOf.has(r.id) || state.groupsAsked.has(r.id)) return state.groupOf.get(r.id) || null;
  state.groupsAsked.add(r.id);
  api('/groups?limit=100').then((groups) => {
    for (const g of groups) keepGroup(g);
  }).catch(() => { /* no line then: it is a hint, not the rollout's data */ });
  return null;
}

// The event stream carries no groups: while a group page (or the list) shows a
// group that still moves, read it again every 2 seconds; stop once it has ended or
// the page shows something else.
function watchGroups() {
  clearTimeout(state.groupTimer);
  state.groupTimer = null;
  if (!signedIn()) return;
  const rt = route();
  let moving = false;
  if (rt.page === 'group') {
    const g = state.groups.get(rt.id);
    moving = Boolean(g) && ACTIVE.has(g.phase);
  } else if (rt.page === 'groups') {
    moving = Boolean(state.groupList) && state.groupList.rows.some((g) => ACTIVE.has(g.phase));
  }
  if (!moving) return;
  state.groupTimer = setTimeout(() => {
    state.groupTimer = null;
    const now = route();
    const read = now.page === 'group' ? fetchGroup(now.id) : now.page === 'groups' ? loadGroupList() : null;
    // A failed read is tried again; the status poller says when the server is down.
    if (read) read.catch(() => watchGroups());
  }, 2000);
}

// === rollout facts derived from its history ===

// The events of the rollout's current attempt (after the last start or retry).
function attemptEvents(r) {
  const events = r.events || [];
  let from = 0;
  events.forEach((e, i) => { if (e.kind === 'Started' || e.kind === 'Retried') from = i; });
  return events.slice(from);
}

// When each stage of the current attempt started (server time), by stage index:
// the history's StageStarted entries, and the view's own `stageStartedAt`.
function stageStarts(r) {
  const starts = {};
  for (const e of attemptEvents(r)) {
    if (e.kind === 'StageStarted' && e.evidence && typeof e.evidence.stageIndex === 'number') {
      starts[e.evidence.stageIndex] = ms(e.at);
    }
  }
  if (r.stageStartedAt) starts[r.stageIndex] = ms(r.stageStartedAt);
  return starts;
}

// Milliseconds left in the current stage, null when it waits for a promote: the
// server's `stageRemainingMs`, counted down by this browser's clock since the view
// arrived, while the stage clock runs (the server sends `stageEndsAt` only then).
function stageRemaining(r) {
  if (typeof r.stageRemainingMs !== 'number') return null;
  const running = r.phase === 'Progressing' && Boolean(r.stageEndsAt);
  return Math.max(0, r.stageRemainingMs - (running ? performance.now() - r[ARRIVED].at : 0));
}

// What a stage is called: a blue/green rollout's stages are its previews (users
// on stable) and its switch (every user on the new version, stable kept warm).
function stageName(r, st) {
  if (r.strategy !== 'blueGreen') return 'Stage';
  return st && st.traffic === 100 ? 'Switch' : 'Preview';
}

// "Stage 2 of 3" for a rollout view (or the status brief).
function stageLabel(r) {
  const stages = r.stages || [];
  return `${stageName(r, stages[r.stageIndex])} ${r.stageIndex + 1} of ${stages.length || r.stageCount || '?'}`;
}

// "Stage 2 of 3 · 4m 10s left of 5m" for a rollout view (or, on the overview
// before its view has arrived, the status brief: the stage alone).
function stageLine(r) {
  const stage = (r.stages || [])[r.stageIndex];
  const parts = [stageLabel(r)];
  const got = r[ARRIVED];
  // The timing of a view from an earlier phase or stage is not this stage's: show
  // none until the newer view arrives.
  if (!ACTIVE.has(r.phase) || !got || got.phase !== r.phase || got.stageIndex !== r.stageIndex) return parts[0];
  const left = stageRemaining(r);
  const total = stage && stage.duration ? ` of ${stage.duration}` : '';
  if (left === null) {
    // The server times every stage that ends by itself: this one waits for a promote.
    if (r.phase === 'Paused') parts.push('paused');
    else if (r.phase === 'Progressing') parts.push('waiting for a manual promote');
  } else if (r.phase === 'Paused') {
    parts.push(`paused, ${span(left)} left${total}`);
  } else if (r.phase === 'Progressing' && !r.stageEndsAt) {
    // The stage clock stops while the router does not serve the stage's weight.
    parts.push(`${span(left)} left${total}, on hold until the router applies the weight`);
  } else if (left > 0) {
    parts.push(`${span(left)} left${total}`);
  } else {
    parts.push('checking health before the next stage');
  }
  return parts.join(' · ');
}

// The decision that ended the current attempt, if any.
function ending(r) {
  const ev = attemptEvents(r);
  for (let i = ev.length - 1; i >= 0; i--) {
    if (['Succeeded', 'Failed', 'Aborted'].includes(ev[i].kind)) return ev[i];
  }
  return null;
}

// === rendering ===

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    render();
  });
}

function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const m = /^\/(rollouts|groups)\/(.+)$/.exec(path);
  if (m) return { page: m[1] === 'groups' ? 'group' : 'rollout', id: decodeURIComponent(m[2]), params };
  if (path === '/history') return { page: 'history', params };
  if (path === '/groups') return { page: 'groups', params };
  return { page: 'overview', params };
}

function currentRolloutId() {
  const r = route();
  return r.page === 'rollout' ? r.id : null;
}

function renderWho() {
  const who = document.getElementById('who');
  who.replaceChildren();
  const sess = state.session;
  if (!sess) return;
  if (!sess.authRequired) {
    who.append(h('span', { class: 'muted', text: 'open access (no tokens configured)' }));
    return;
  }
  if (sess.signedIn) {
    who.append(
      h('span', { class: 'whoami', text: `${sess.name} · ${sess.role}` }),
      h('button', { class: 'btn btn-small', id: 'signout', type: 'button', onclick: signOut, text: 'Sign out' }),
    );
  }
}

function renderConn(problem) {
  const el = document.getElementById('conn');
  if (!signedIn()) { el.hidden = true; return; }
  if (state.live) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  el.textContent = problem
    ? `Cannot reach the server (${problem}); retrying…`
    : 'Live updates interrupted; refreshing every 3 seconds and reconnecting…';
}

function render() {
  const main = document.getElementById('main');
  const rt = route();
  for (const a of document.querySelectorAll('#nav a')) {
    const nav = { rollout: 'overview', group: 'groups' }[rt.page] || rt.page;
    a.classList.toggle('active', a.dataset.nav === nav);
  }
  if (!state.session || state.signingOut) return;
  if (!signedIn()) {
    document.getElementById('nav').hidden = true;
    if (!document.getElementById('signin-form')) main.replaceChildren(signInPage());
    return;
  }
  document.getElementById('nav').hidden = false;
  let view;
  if (rt.page === 'rollout') view = rolloutPage(rt.id);
  else if (rt.page === 'history') view = historyPage(rt.params);
  else if (rt.page === 'groups') view = groupsPage();
  else if (rt.page === 'group') view = groupPage(rt.id);
  else view = overviewPage();
  if (!view) return;
  // Keep keyboard focus across the redraw (the page redraws every second).
  const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : null;
  main.replaceChildren(view);
  if (focused) {
    const again = document.getElementById(focused);
    if (again) again.focus({ preventScroll: true });
  }
}

function signInPage() {
  const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'fl_…' });
  const error = h('p', { class: 'form-error', id: 'signin-error', role: 'alert' });
  const form = h('form', { id: 'signin-form', class: 'card signin' },
    h('h1', { text: 'Sign in' }),
    h('p', { class: 'muted', text: 'This server needs an access token. Paste the token you were given (fledge token makes one). It is exchanged for a session cookie and not kept in this page.' }),
    h('label', {}, h('span', { text: 'Access token' }), input),
    error,
    h('button', { type: 'submit', class: 'btn btn-primary', id: 'signin', text: 'Sign in' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      state.session = await api('/login', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: input.value }),
      });
      input.value = '';
      renderWho();
      connect();
      render();
    } catch (err) {
      error.textContent = err.status === 401 ? 'That token is not valid.' : err.message;
    }
  });
  return form;
}

async function signOut() {
  // While the server forgets the session nothing on the page asks for data with it
  // (it would be refused, and a refusal is an error in the console): the stream and
  // the pollers stop, what was read is dropped, and the page is not drawn again
  // until the server has answered. What arrives meanwhile is dropped again after.
  state.signingOut = true;
  forgetData();
  try {
    await api('/logout', { method: 'POST' });
  } catch (_) { /* the session is gone either way */ }
  try {
    await loadSession();
  } finally {
    state.signingOut = false;
    forgetData();
    render();
  }
}

// Drops what was read on the session that ends, and stops reading.
function forgetData() {
  disconnect();
  state.rollouts.clear();
  state.points.clear();
  state.missing.clear();
  state.status = null;
  state.groups.clear();
  state.groupList = null;
  watchGroups();
}

// --- weight bar ---

function weightBar(weight, stableVersion, canaryVersion, phase) {
  const w = Math.max(0, Math.min(100, weight || 0));
  const fill = h('div', { class: `weight-fill phase-bg-${PHASE_CLASS[phase] || 'pending'}` });
  fill.style.width = w + '%';
  return h('div', { class: 'weight', 'data-weight': w },
    h('div', { class: 'weight-labels' },
      h('span', { class: 'weight-canary' }, h('strong', { class: 'weight-value', text: `${w}%` }), ` to canary ${canaryVersion || ''}`),
      h('span', { class: 'weight-stable', text: `${100 - w}% to stable ${stableVersion || ''}` })),
    h('div', { class: 'weight-track', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': w, 'aria-label': 'canary traffic' }, fill));
}

function healthTable(stable, canary) {
  const row = (label, a, cls) => h('tr', { class: cls },
    h('th', { scope: 'row', text: label }),
    h('td', { text: a ? rate(a.requestRate) : '–' }),
    h('td', { class: 'err', text: a ? pct(a.errorRate) : '–' }),
    h('td', { text: a ? millis(a.p95Ms) : '–' }));
  return h('table', { class: 'health' },
    h('thead', {}, h('tr', {}, h('th', {}), h('th', { text: 'Requests' }), h('th', { text: 'Errors' }), h('th', { text: 'p95' }))),
    h('tbody', {}, row('Stable', stable, 'arm-stable'), canary !== undefined ? row('Canary', canary, 'arm-canary') : null));
}

// --- overview ---

function overviewPage() {
  const status = state.status;
  if (!status) return h('p', { class: 'muted', text: 'Waiting for the server…' });
  const apps = status.apps || [];
  const list = h('div', { class: 'cards' });
  if (!apps.length) list.append(h('p', { class: 'muted', text: 'No apps are registered yet.' }));
  const ordered = apps.slice().sort((a, b) => (b.rollout ? 1 : 0) - (a.rollout ? 1 : 0) || a.name.localeCompare(b.name));
  for (const app of ordered) list.append(appCard(app));
  return h('section', { class: 'overview' },
    h('h1', { class: 'page-title', text: 'Apps' }), list);
}

function appCard(app) {
  const r = app.rollout;
  const full = r ? state.rollouts.get(r.id) : null;
  const card = h('article', { class: `card app-card ${r ? 'phase-border-' + (PHASE_CLASS[r.phase] || 'pending') : ''}`, 'data-app': app.name });
  card.append(h('div', { class: 'card-head' },
    h('h2', {}, h('span', { text: app.name })),
    r ? phaseBadge(r.phase) : h('span', { class: 'badge phase-idle', text: 'Stable' })));
  card.append(h('p', { class: 'versions' },
    'Stable ', h('strong', { class: 'stable-version', text: app.stable.version }),
    r ? [' → canary ', h('strong', { class: 'canary-version', text: r.version })] : ' · no rollout running'));
  if (r) {
    card.append(weightBar(r.canaryWeight, app.stable.version, r.version, r.phase));
    const facts = full ? Object.assign({}, full, { phase: r.phase, stageIndex: r.stageIndex, canaryWeight: r.canaryWeight }) : Object.assign({ stages: [], stageCount: r.stageCount }, r);
    card.append(h('p', { class: 'stage-line', text: stageLine(facts) }));
    card.append(healthTable(app.stable.health, app.canary));
    card.append(h('a', { class: 'btn btn-link', href: `#/rollouts/${encodeURIComponent(r.id)}`, text: 'Open rollout →' }));
  } else {
    card.append(healthTable(app.stable.health));
    if (app.previousStable) card.append(h('p', { class: 'muted small previous', text: `Stable before: ${app.previousStable}` }));
    const allowed = app.allowedActions || [];
    const buttons = APP_BUTTONS.filter((b) => allowed.includes(b.action));
    if (buttons.length) {
      card.append(h('div', { class: 'actions' }, buttons.map((b) => actionButton(b, `app-${b.id}-${app.name}`, () => confirmAction(b, app, {
        path: (now) => b.path(app, now),
        done: (r) => {
          state.rollouts.set(r.id, r);
          toast(`${b.label}: started a rollout of ${r.app} back to ${r.version}; it is ${r.phase}.`, 'ok');
          location.hash = `#/rollouts/${encodeURIComponent(r.id)}`;
        },
      })))));
    }
    card.append(h('a', { class: 'btn btn-link', href: `#/history?app=${encodeURIComponent(app.name)}`, text: 'Past rollouts →' }));
  }
  return card;
}

// --- rollout page ---

// The page of something not read yet (`noun` `id`): reads it once with `read`,
// saying so meanwhile, or why it cannot be shown.
function notYet(noun, id, read) {
  if (state.missing.has(id)) {
    return h('p', { class: 'form-error', text: `Cannot show ${noun} ${id}: ${state.missing.get(id)}` });
  }
  if (notYet.loading !== id) {
    notYet.loading = id;
    read(id).catch((e) => {
      state.missing.set(id, e.message);
      scheduleRender();
    }).finally(() => { notYet.loading = null; });
  }
  return h('p', { class: 'muted', text: `Loading the ${noun}…` });
}

// The weight bar of rollout `r`, its stable side named as the app's status has it
// (the new version itself once the rollout has succeeded).
function rolloutWeightBar(r) {
  const app = (state.status && (state.status.apps || []).find((a) => a.name === r.app)) || null;
  const stable = r.phase === 'Succeeded' ? r.version : app ? app.stable.version : '';
  return weightBar(r.canaryWeight, stable, r.version, r.phase);
}

function rolloutPage(id) {
  const r = state.rollouts.get(id);
  if (!r) return notYet('rollout', id, (x) => fetchRollout(x).then(loadPoints));
  if (!state.points.has(r.id)) loadPoints(r);
  const page = h('section', { class: 'rollout', 'data-rollout': r.id, 'data-phase': r.phase });

  page.append(h('p', { class: 'crumbs' }, h('a', { href: '#/', text: '← All apps' })));
  page.append(h('div', { class: 'rollout-head' },
    h('h1', { class: 'page-title' }, `${r.app} `, h('span', { class: 'muted', text: r.version })),
    phaseBadge(r.phase)));
  const member = groupOfRollout(r);
  if (member) {
    page.append(h('p', { class: 'member-of' }, member.undo ? 'Undo for group ' : 'Member of group ',
      h('a', { href: `#/groups/${encodeURIComponent(member.group.id)}`, text: member.group.name })));
  }

  const summary = h('div', { class: 'card' });
  summary.append(rolloutWeightBar(r));
  summary.append(h('p', { class: 'stage-line', text: stageLine(r) }));
  const end = ending(r);
  if (r.phase === 'Failed' || r.phase === 'Aborted') summary.append(decisionBox(r, end));
  if (r.phase === 'Succeeded' && end) summary.append(h('p', { class: 'decision ok', text: `${r.version} is now the stable version. ${end.message}` }));
  summary.append(actionBar(r, ACTION_BUTTONS, 'rollout', (b) => ({
    path: () => `/rollouts/${encodeURIComponent(r.id)}/${b.path}`,
    done: (updated) => {
      if (!state.rollouts.has(updated.id)) state.rollouts.set(updated.id, updated);
      onRollout(updated);
      toast(`${b.label}: done. The rollout is now ${updated.phase}.`, 'ok');
    },
    refused: () => fetchRollout(r.id).catch(() => {}),
  })));
  page.append(summary);

  page.append(h('h2', { text: 'Stages' }), timeline(r));
  page.append(h('h2', { text: 'Health checks' }), criteriaTable(r));
  page.append(h('h2', { text: 'Live health' }), charts(r));
  page.append(h('h2', { text: 'History' }), eventList(r.events));
  return page;
}

function decisionBox(r, end) {
  const box = h('div', { class: 'decision bad' });
  if (!end) {
    box.append(h('p', { text: 'Rolled back: the canary gets no traffic.' }));
    return box;
  }
  const who = end.actor === 'engine' ? 'fledge rolled back automatically' : `Aborted by ${end.actor}`;
  box.append(h('p', {}, h('strong', { text: who + ': ' }), end.message));
  const crit = end.evidence && end.evidence.criteria;
  const extra = (crit || []).map((c) => c.summary || c.criterion).filter((t) => t && !end.message.includes(t));
  if (extra.length) box.append(h('ul', { class: 'evidence' }, extra.map((t) => h('li', { text: t }))));
  box.append(h('p', { class: 'muted', text: `${r.version} gets 0% of the traffic until someone retries.` }));
  return box;
}

// The buttons of the actions the server allows this caller now on `subject` (a
// `noun`: rollout or group), and nothing else; `table` words them, and `how(b)`
// says where button `b` posts and what follows (see confirmAction).
function actionBar(subject, table, noun, how) {
  const bar = h('div', { class: 'actions' });
  const allowed = subject.allowedActions || [];
  const buttons = table.filter((b) => allowed.includes(b.action));
  // An action this page has no words for still gets a plain button.
  for (const name of allowed) {
    if (table.some((b) => b.action === name)) continue;
    const label = name.charAt(0).toUpperCase() + name.slice(1);
    buttons.push({ id: name, action: name, label, path: encodeURIComponent(name),
      title: `${label} the ${noun}?`, text: () => `${label} this ${noun}.` });
  }
  for (const b of buttons) bar.append(actionButton(b, `act-${b.id}`, () => confirmAction(b, subject, how(b))));
  if (!buttons.length) {
    const text = !state.session.canOperate
      ? `You can watch this ${noun}; your role (${state.session.role}) cannot change it.`
      : ACTIVE.has(subject.phase) ? 'Nothing to do right now.' : `Nothing to do: the ${noun} is over.`;
    bar.append(h('p', { class: 'muted', text }));
  }
  return bar;
}

// The button of an action (of ACTION_BUTTONS or APP_BUTTONS).
function actionButton(b, id, onclick) {
  return h('button', {
    type: 'button', id, 'data-action': b.action,
    class: `btn ${b.danger ? 'btn-danger' : b.primary ? 'btn-primary' : ''}`,
    onclick, text: b.label,
  });
}

// Asks to confirm `action` on `subject` (a rollout or an app), with a reason when
// the action takes one and "now or through the stages" when it offers both; then
// posts it to `how.path(now)` and hands the server's answer to `how.done`.
function confirmAction(action, subject, how) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = action.title;
  document.getElementById('confirm-text').textContent = action.text(subject);
  const reasonLabel = document.getElementById('confirm-reason-label');
  const reason = document.getElementById('confirm-reason');
  reasonLabel.hidden = !action.reason;
  reason.value = '';
  document.getElementById('confirm-when').hidden = !action.now;
  document.getElementById('confirm-stages').checked = true;
  const ok = document.getElementById('confirm-ok');
  ok.textContent = action.label;
  ok.className = `btn ${action.danger ? 'btn-danger' : 'btn-primary'}`;
  dialog.dataset.action = action.id;
  const form = document.getElementById('confirm-form');
  form.onsubmit = async (e) => {
    e.preventDefault();
    dialog.close();
    const now = Boolean(action.now) && document.getElementById('confirm-now').checked;
    const body = action.reason && reason.value.trim() ? JSON.stringify({ reason: reason.value.trim() }) : '';
    try {
      how.done(stamp(await api(how.path(now), {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
      })));
    } catch (err) {
      toast(`${action.label} refused: ${err.message}`);
      if (how.refused) how.refused();
    }
  };
  document.getElementById('confirm-cancel').onclick = () => dialog.close();
  dialog.showModal();
  (action.reason ? reason : ok).focus();
}

function timeline(r) {
  const stages = r.stages || [];
  const starts = stageStarts(r);
  const over = !ACTIVE.has(r.phase);
  const list = h('ol', { class: 'timeline' });
  stages.forEach((st, i) => {
    let status;
    if (r.phase === 'Succeeded') status = 'done';
    else if (i < r.stageIndex) status = 'done';
    else if (i === r.stageIndex) status = over ? (r.phase === 'Failed' || r.phase === 'Aborted' ? 'stopped' : 'done') : 'current';
    else status = 'todo';
    const words = { done: 'done', current: 'now', todo: 'to come', stopped: 'stopped here' }[status];
    const crit = (st.successCriteria || []).join(', ');
    const name = stageName(r, st);
    const warm = name === 'Switch' ? 'stable kept warm ' : '';
    const detail = [st.duration ? `${warm}for ${st.duration}` : st.promote ? 'then promote' : `${warm}until promoted by hand`];
    if (starts[i] !== undefined && status !== 'todo') detail.push(`started ${clock(starts[i])}`);
    list.append(h('li', { class: `stage stage-${status}`, 'data-stage': i },
      h('div', { class: 'stage-dot', 'aria-hidden': 'true' }),
      h('div', { class: 'stage-body' },
        h('div', { class: 'stage-title' }, h('strong', { text: `${st.traffic}%` }), st.mirror ? ` + copies of ${st.mirror}%` : null, ` · ${name.toLowerCase()} ${i + 1}`, h('span', { class: 'stage-state', text: words })),
        h('div', { class: 'muted small', text: detail.join(' · ') }),
        crit ? h('div', { class: 'small', text: crit }) : null)));
  });
  return list;
}

// The engine's latest judgement of the current stage, criterion by criterion, in
// the units and with the limits it compared.
function criteriaTable(r) {
  const a = r.analysis;
  if (!a) return h('p', { class: 'muted', text: 'No analysis yet: waiting for the first requests.' });
  if (!a.criteria.length) return h('p', { class: 'muted', text: 'This stage has no health checks.' });
  const table = h('table', { class: 'criteria' },
    h('caption', { class: 'muted small', text: `Stage ${a.stageIndex + 1}, checked ${clock(a.at)}` }),
    h('thead', {}, h('tr', {},
      ['Check', 'Canary', 'Sample', 'Stable', 'Limit', 'Result'].map((t) => h('th', { text: t })))));
  const body = h('tbody');
  for (const c of a.criteria) {
    const st = c.status;
    const canary = c.canary || {};
    const sample = [`n=${count(canary.requests)}`];
    if (canary.requests < c.minRequests) sample[0] += ` of ${count(c.minRequests)}`;
    if (typeof canary.bad === 'number') sample.push(`${count(canary.bad)} bad`);
    body.append(h('tr', { class: `crit-${st}`, 'data-metric': c.metric, title: c.summary },
      h('td', { 'data-label': 'Check' }, h('code', { text: c.criterion })),
      h('td', { 'data-label': 'Canary', class: 'crit-canary', text: formatValue(c.unit, canary.value) }),
      h('td', { 'data-label': 'Sample', class: 'crit-sample', text: sample.join(' · ') }),
      h('td', { 'data-label': 'Stable', class: 'crit-stable', text: c.stable ? `${formatValue(c.unit, c.stable.value)} (n=${count(c.stable.requests)})` : '–' }),
      h('td', { 'data-label': 'Limit', class: 'crit-limit', text: formatValue(c.unit, c.threshold) }),
      h('td', { 'data-label': 'Result', class: 'crit-result' }, h('span', { class: 'result' },
        h('span', { class: `badge verdict-${st}`, text: STATUS_WORDS[st] || st }),
        c.sequential ? h('span', { class: 'evalue muted', text: evidenceWords(c) }) : null))));
  }
  table.append(body);
  return table;
}

// The e-value a sequential verdict rests on against the one that decides, as the
// engine's summary states them: pass evidence once passed, abort evidence otherwise.
function evidenceWords(c) {
  const q = c.sequential;
  const e = c.status === 'pass' && typeof q.passEValue === 'number' ? q.passEValue : q.eValue;
  const num = (x) => (Math.abs(x) >= 1e6 ? x.toExponential(2).replace('e+', 'e') : significant(x));
  return `E = ${num(e)} ${e >= q.eThreshold ? '≥' : '<'} ${num(q.eThreshold)}`;
}

// A history (a rollout's or a group's), newest first.
function eventList(history) {
  const events = (history || []).slice().reverse();
  if (!events.length) return h('p', { class: 'muted', text: 'No history yet.' });
  const list = h('ol', { class: 'events' });
  for (const e of events) {
    list.append(h('li', { class: `event event-${e.kind}` },
      h('time', { datetime: e.at, text: clock(e.at) }),
      h('span', { class: 'event-kind', text: EVENT_WORDS[e.kind] || e.kind }),
      h('span', { class: 'event-actor', text: e.actor === 'engine' ? 'fledge' : e.actor }),
      h('span', { class: 'event-msg', text: e.message })));
  }
  return list;
}

// --- charts ---

// The drawing width that fits the page (main's padding and the chart box's).
function chartWidth() {
  const main = document.getElementById('main');
  const narrow = window.innerWidth <= 640;
  return Math.max(260, Math.min(1120, (main.clientWidth || 800) - (narrow ? 52 : 62)));
}

// The limits `metrics` were judged against over the stages of the current attempt,
// as the engine reported them: for a stage that ended, the evidence of the entry
// that ended it; for the current stage, the latest analysis.
function thresholdSegments(r, metrics, scale, tEnd) {
  const starts = stageStarts(r);
  const judged = {};
  for (const e of attemptEvents(r)) {
    const ev = e.evidence;
    if (ev && typeof ev.stageIndex === 'number' && Array.isArray(ev.criteria)) judged[ev.stageIndex] = ev.criteria;
  }
  if (r.analysis) judged[r.analysis.stageIndex] = r.analysis.criteria;
  const indexes = Object.keys(starts).map(Number).sort((x, y) => x - y);
  const segs = [];
  indexes.forEach((i, k) => {
    const from = starts[i];
    const to = k + 1 < indexes.length ? starts[indexes[k + 1]] : tEnd;
    for (const c of judged[i] || []) {
      if (!metrics.includes(c.metric) || typeof c.threshold !== 'number') continue;
      const value = c.threshold * scale;
      const last = segs.find((x) => x.metric === c.metric && x.to === from && x.value === value);
      if (last) last.to = to;
      else segs.push({ metric: c.metric, from, to, value, label: c.criterion });
    }
  });
  return segs;
}

function lineChart(opts) {
  const W = opts.width; const H = opts.height || 180;
  const pad = { l: 52, r: 12, t: 10, b: 24 };
  const iw = W - pad.l - pad.r; const ih = H - pad.t - pad.b;
  const t0 = opts.from; const t1 = Math.max(opts.to, t0 + 1000);
  let dataMax = 0;
  for (const se of opts.series) for (const [, v] of se.points) if (v !== null && v > dataMax) dataMax = v;
  // A limit far above the data would flatten the lines: name it instead of drawing it.
  const shown = opts.thresholds.filter((th) => dataMax === 0 || th.value <= Math.max(dataMax * 5, opts.minMax || 0));
  const above = opts.thresholds.filter((th) => !shown.includes(th));
  let want = Math.max(dataMax * 1.15, opts.minMax || 0, ...shown.map((th) => th.value * 1.12));
  if (!(want > 0)) want = 1;
  const step = niceStep(want / 4);
  const ymax = Math.ceil(want / step - 1e-9) * step;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * iw;
  const y = (v) => pad.t + ih - (v / ymax) * ih;
  const svg = s('svg', { class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': opts.label });
  for (let v = 0; v <= ymax + step / 2; v += step) {
    svg.append(s('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(s('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis', text: v === 0 ? opts.format(0).replace(/^0[.0]*/, '0') : opts.format(v) }));
  }
  if (above.length) {
    const words = [...new Set(above.map((th) => opts.format(th.value)))].join(', ');
    svg.append(s('text', { x: W - pad.r, y: pad.t + 10, 'text-anchor': 'end', class: 'threshold-label', text: `limit ${words} (far above)` }));
  }
  const ticks = Math.max(1, Math.min(6, Math.floor(iw / 110), Math.floor((t1 - t0) / 1000)));
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    svg.append(s('text', { x: x(t), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle', class: 'axis', text: clock(t) }));
  }
  for (const th of shown) {
    const xa = x(Math.max(th.from, t0)); const xb = x(Math.min(th.to, t1));
    if (xb <= xa) continue;
    const ty = y(th.value);
    svg.append(s('line', { x1: xa, x2: xb, y1: ty, y2: ty, class: 'threshold' }));
    svg.append(s('text', { x: xb - 2, y: ty - 4 < pad.t + 8 ? ty + 13 : ty - 4, 'text-anchor': 'end', class: 'threshold-label', text: `limit ${opts.format(th.value)}` }));
  }
  for (const se of opts.series) {
    let d = ''; let pen = false;
    for (const [t, v] of se.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.append(s('path', { d, class: `series ${se.cls}`, fill: 'none' }));
  }
  const legend = h('div', { class: 'legend' }, opts.series.map((se) => h('span', { class: `key ${se.cls}` }, h('i', {}), se.name)),
    opts.thresholds.length ? h('span', { class: 'key threshold-key' }, h('i', {}), 'limit') : null);
  return h('figure', { class: 'chart-box' }, h('figcaption', { text: opts.label }), svg, legend);
}

// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v`.
function niceStep(v) {
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v - 1e-12) return m * exp;
  return 10 * exp;
}

function charts(r) {
  const points = state.points.get(r.id) || [];
  const box = h('div', { class: 'charts' });
  if (points.length < 2) {
    box.append(h('p', { class: 'muted', text: ACTIVE.has(r.phase)
      ? 'Collecting health readings (one every 2 seconds)…'
      : 'No health readings were recorded while this rollout ran.' }));
    return box;
  }
  // Server time throughout: the points', the rollout's and the stages' timestamps.
  const from = Math.min(ms(r.createdAt), points[0].t);
  const to = Math.max(r.finishedAt ? ms(r.finishedAt) : 0, points[points.length - 1].t);
  const width = chartWidth();
  const pick = (arm, key, scale) => points.map((p) => [p.t, p[arm] && p[arm][key] !== null && p[arm][key] !== undefined ? p[arm][key] * scale : null]);
  box.append(lineChart({
    label: 'Error rate', width, from, to, format: (v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)) + '%', minMax: 1,
    series: [
      { name: 'stable', cls: 'stable', points: pick('stable', 'errorRate', 100) },
      { name: 'canary', cls: 'canary', points: pick('canary', 'errorRate', 100) },
    ],
    thresholds: thresholdSegments(r, ['error_rate'], 100, to),
  }));
  const latThresholds = thresholdSegments(r, ['latency_p50', 'latency_p95', 'latency_p99'], 1000, to);
  box.append(lineChart({
    label: 'Latency (p50, p95, p99)', width, from, to, format: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ms', minMax: 10,
    series: [
      { name: 'stable p50', cls: 'stable q50', points: pick('stable', 'p50Ms', 1) },
      { name: 'stable p95', cls: 'stable q95', points: pick('stable', 'p95Ms', 1) },
      { name: 'stable p99', cls: 'stable q99', points: pick('stable', 'p99Ms', 1) },
      { name: 'canary p50', cls: 'canary q50', points: pick('canary', 'p50Ms', 1) },
      { name: 'canary p95', cls: 'canary q95', points: pick('canary', 'p95Ms', 1) },
      { name: 'canary p99', cls: 'canary q99', points: pick('canary', 'p99Ms', 1) },
    ],
    thresholds: latThresholds,
  }));
  box.append(lineChart({
    label: 'Canary traffic', width, from, to, height: 120, format: (v) => v.toFixed(0) + '%', minMax: 100,
    series: [{ name: 'canary share', cls: 'weight-line', points: points.map((p) => [p.t, p.canaryWeight]) }],
    thresholds: [],
  }));
  return box;
}

// --- groups ---

// How a group's members move, in a few words.
function orderBrief(g) {
  return g.order === 'together' ? 'together' : (g.order || []).join(' → ');
}

function orderWords(g) {
  if (g.order === 'together') {
    return 'Lock step: every member moves to its next stage only once all of them have passed their current one.';
  }
  const undo = g.rollbackSucceeded ? ' A failure also undoes the members that had succeeded.' : '';
  return `In order, ${(g.order || []).join(', then ')}: each member starts once the one before it has succeeded.${undo}`;
}

function groupsPage() {
  if (!state.groupList || state.groupList.stale) {
    if (!state.groupList) state.groupList = { rows: [], loaded: false, loading: false };
    state.groupList.stale = false;
    loadGroupList();
  }
  const rows = state.groupList.rows;
  const page = h('section', { class: 'groups' }, h('h1', { class: 'page-title', text: 'Rollout groups' }));
  if (!state.groupList.loaded) page.append(h('p', { class: 'muted', text: 'Loading…' }));
  else if (!rows.length) page.append(h('p', { class: 'muted', text: 'No rollout groups yet. A group document sent with fledge apply starts one.' }));
  else {
    const table = h('table', { class: 'history-table groups-table' },
      h('thead', {}, h('tr', {}, ['Group', 'Phase', 'Order', 'Members', 'Started'].map((t) => h('th', { text: t })))));
    const body = h('tbody');
    for (const g of rows) {
      const members = g.members.map((m) => `${m.app} ${m.version}: ${m.rollout ? (PHASE_WORDS[m.rollout.phase] || m.rollout.phase) : 'not started'}`);
      body.append(h('tr', { 'data-group': g.id },
        h('td', { 'data-label': 'Group' }, h('a', { href: `#/groups/${encodeURIComponent(g.id)}`, text: g.name })),
        h('td', { 'data-label': 'Phase' }, phaseBadge(g.phase)),
        h('td', { 'data-label': 'Order', text: orderBrief(g) }),
        h('td', { 'data-label': 'Members', class: 'why', text: members.join('; ') }),
        h('td', { 'data-label': 'Started', text: when(g.createdAt) })));
    }
    table.append(body);
    page.append(table);
  }
  return page;
}

function groupPage(id) {
  const g = state.groups.get(id);
  if (!g) return notYet('group', id, fetchGroup);
  const page = h('section', { class: 'group', 'data-group': g.id, 'data-phase': g.phase });
  page.append(h('p', { class: 'crumbs' }, h('a', { href: '#/groups', text: '← All groups' })));
  page.append(h('div', { class: 'rollout-head' },
    h('h1', { class: 'page-title' }, `${g.name} `, h('span', { class: 'muted', text: g.id })),
    phaseBadge(g.phase)));

  const summary = h('div', { class: 'card' });
  summary.append(h('p', { class: 'group-order', text: orderWords(g) }));
  if (g.message) summary.append(h('p', { class: `decision group-message ${g.phase === 'Succeeded' ? 'ok' : 'bad'}`, text: g.message }));
  else if (g.phase === 'Succeeded') summary.append(h('p', { class: 'decision ok group-message', text: 'Every member succeeded.' }));
  // The server refuses to promote a lock-step group fully: its members move stage by stage.
  const buttons = GROUP_BUTTONS.filter((b) => b.id !== 'promote-full' || g.order !== 'together');
  summary.append(actionBar(g, buttons, 'group', (b) => ({
    path: () => `/groups/${encodeURIComponent(g.id)}/${b.path}`,
    done: (updated) => {
      keepGroup(updated);
      watchGroups();
      toast(`${b.label}: done. The group is now ${updated.phase}.`, 'ok');
    },
    refused: () => fetchGroup(g.id).catch(() => {}),
  })));
  page.append(summary);

  page.append(h('h2', { text: 'Members' }), h('div', { class: 'cards members' }, g.members.map((m) => memberCard(g, m))));
  page.append(h('h2', { text: 'History' }), eventList(g.events));
  return page;
}

// One member of group `g`, as its card beside the others.
function memberCard(g, m) {
  const r = m.rollout;
  const card = h('article', {
    class: `card app-card member ${r ? 'phase-border-' + (PHASE_CLASS[r.phase] || 'pending') : ''}`,
    'data-app': m.app, 'data-phase': r ? r.phase : 'NotStarted',
  });
  card.append(h('div', { class: 'card-head' },
    h('h2', {}, h('span', { text: m.app })),
    r ? phaseBadge(r.phase) : h('span', { class: 'badge phase-idle', text: ACTIVE.has(g.phase) ? 'Not started' : 'Never started' })));
  card.append(h('p', { class: 'versions' }, 'Version ', h('strong', { class: 'canary-version', text: m.version })));
  if (m.waitingForGroup) card.append(h('p', { class: 'waiting' }, h('span', { class: 'badge phase-paused waiting-badge', text: 'Waiting for the group' })));
  if (r) {
    card.append(rolloutWeightBar(r));
    // A member waiting for the group has passed its stage: its time there is up.
    const line = m.waitingForGroup ? `${stageLabel(r)} · passed, waiting for the other members` : stageLine(r);
    card.append(h('p', { class: 'stage-line', text: line }));
    card.append(h('a', { class: 'btn btn-link', href: `#/rollouts/${encodeURIComponent(r.id)}`, text: 'Open rollout →' }));
  } else if (ACTIVE.has(g.phase)) {
    card.append(h('p', { class: 'muted', text: 'Starts when the members before it in the order have succeeded.' }));
  }
  if (m.undoRolloutId) {
    card.append(h('p', { class: 'undone' }, 'Undone by ',
      h('a', { href: `#/rollouts/${encodeURIComponent(m.undoRolloutId)}`, text: m.undoRolloutId })));
  }
  return card;
}

// --- history ---

function historyPage(params) {
  const app = params.get('app') || '';
  const phase = params.get('phase') || '';
  const key = `${app}|${phase}`;
  if (!state.history || state.history.key !== key || state.history.stale) {
    if (!state.history || state.history.key !== key) state.history = { key, rows: [], loading: true };
    state.history.stale = false;
    loadHistory(key, app, phase);
  }
  const apps = ((state.status && state.status.apps) || []).map((a) => a.name);
  const setFilter = (k, v) => {
    const p = new URLSearchParams({ app, phase });
    p.set(k, v);
    for (const [kk, vv] of [...p.entries()]) if (!vv) p.delete(kk);
    location.hash = '#/history' + (p.toString() ? '?' + p.toString() : '');
  };
  const appSel = h('select', { id: 'filter-app', onchange: (e) => setFilter('app', e.target.value) },
    h('option', { value: '', text: 'All apps' }),
    apps.map((a) => h('option', { value: a, selected: a === app, text: a })));
  const phaseSel = h('select', { id: 'filter-phase', onchange: (e) => setFilter('phase', e.target.value) },
    h('option', { value: '', text: 'Any outcome' }),
    ['Succeeded', 'Failed', 'Aborted', 'Progressing', 'Paused', 'Pending'].map((p) => h('option', { value: p, selected: p === phase, text: p })));
  const page = h('section', { class: 'history' },
    h('h1', { class: 'page-title', text: 'Past rollouts' }),
    h('div', { class: 'filters' }, h('label', {}, 'App ', appSel), h('label', {}, 'Outcome ', phaseSel)));
  const rows = state.history.rows;
  if (state.history.loading && !rows.length) page.append(h('p', { class: 'muted', text: 'Loading…' }));
  else if (!rows.length) page.append(h('p', { class: 'muted', text: 'No rollouts match.' }));
  else {
    const table = h('table', { class: 'history-table' },
      h('thead', {}, h('tr', {}, ['App', 'Version', 'Outcome', 'Started', 'Took', 'Who and why'].map((t) => h('th', { text: t })))));
    const body = h('tbody');
    for (const r of rows) {
      const took = r.finishedAt ? span(ms(r.finishedAt) - ms(r.createdAt)) : 'still running';
      body.append(h('tr', { 'data-rollout': r.id },
        h('td', { 'data-label': 'App', text: r.app }),
        h('td', { 'data-label': 'Version' }, h('a', { href: `#/rollouts/${encodeURIComponent(r.id)}`, text: r.version })),
        h('td', { 'data-label': 'Outcome' }, phaseBadge(r.phase)),
        h('td', { 'data-label': 'Started', text: when(r.createdAt) }),
        h('td', { 'data-label': 'Took', text: took }),
        h('td', { 'data-label': 'Who and why', class: 'why', text: whoAndWhy(r) })));
    }
    table.append(body);
    page.append(table);
  }
  return page;
}

function whoAndWhy(r) {
  if (!r.events) return '…';
  const parts = [];
  const created = r.events.find((e) => e.kind === 'Created');
  if (created && created.actor !== 'engine') parts.push(`started by ${created.actor}`);
  for (const e of attemptEvents(r)) {
    if (e.kind === 'Promoted') parts.push(`promoted by ${e.actor}`);
  }
  const end = ending(r);
  if (end) {
    // The engine's sentence already names the operator and the reason.
    parts.push(end.kind === 'Failed' ? `rolled back: ${end.message}` : end.message);
  }
  return parts.join('; ') || '–';
}

async function loadHistory(key, app, phase) {
  const q = new URLSearchParams();
  if (app) q.set('app', app);
  if (phase) q.set('phase', phase);
  q.set('limit', '100');
  try {
    const rows = await api('/rollouts?' + q.toString());
    if (!state.history || state.history.key !== key) return;
    state.history.rows = rows;
    state.history.loading = false;
    scheduleRender();
    // The list has no history entries; fetch them for "who and why", a few at a time.
    const queue = rows.slice();
    const worker = async () => {
      while (queue.length) {
        const r = queue.shift();
        try {
          r.events = await api(`/rollouts/${encodeURIComponent(r.id)}/events`);
        } catch (_) { r.events = []; }
        if (state.history && state.history.key === key) scheduleRender();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  } catch (e) {
    if (state.history && state.history.key === key) {
      state.history.loading = false;
      toast(`Cannot load the history: ${e.message}`);
    }
  }
}

// === start ===

async function boot() {
  try {
    await loadSession();
  } catch (e) {
    document.getElementById('main').replaceChildren(h('p', { class: 'form-error', text: `Cannot reach the server: ${e.message}` }));
    setTimeout(boot, 3000);
    return;
  }
  window.addEventListener('resize', () => scheduleRender());
  window.addEventListener('hashchange', () => {
    window.scrollTo(0, 0);
    state.missing.clear();
    // A group page reads its group afresh; the list, when shown again, too.
    state.groups.clear();
    if (state.groupList) state.groupList.stale = true;
    watchGroups();
    render();
  });
  connect();
  render();
  // Countdowns move every second even without news from the server.
  setInterval(() => {
    if (signedIn() && route().page !== 'history' && !document.getElementById('confirm').open) scheduleRender();
  }, 1000);
}

boot();
