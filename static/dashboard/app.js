// Keel dashboard: the page. Everything it shows arrives over one EventSource
// (/api/events, fed by the server's etcd watch): no timer here asks the server
// anything. Actions go to /api/* with the session's CSRF token (kept in this
// page's memory only) or are refused by the server.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  let csrf = null;
  let charts = null;

  /** An element with text children only: values from the cluster never become markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.className = value;
      else if (key.startsWith('data-')) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  const bytes = (n) => (n === null || n === undefined ? '–' : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`);
  const seconds = (ms) => `${Math.round(ms / 1000)} s`;
  const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  function dl(pairs, cls) {
    const list = el('dl', { class: cls || '' });
    for (const [key, value] of pairs) list.append(el('dt', {}, key), el('dd', {}, value));
    return list;
  }

  function memberCard(m) {
    const role = m.role.replace(/\s+/g, '-');
    const gone = m.goneSinceMs !== null;
    const card = el('div', { class: `member role-${role}${m.running ? '' : ' down'}`, 'data-member': m.name, 'data-role': m.role },
      el('span', { class: 'role' }, m.draining ? `${m.role}, draining` : m.role),
      el('div', { class: 'name' }, m.name),
      dl([
        ['state', gone ? `no member key for ${seconds(Date.now() - m.goneSinceMs)} (last: ${m.state})` : m.state],
        ['timeline', m.timeline === null ? '–' : m.timeline],
        ['lag', m.role === 'leader' ? '–' : bytes(m.lagBytes)],
        ['sync', m.sync ? 'yes' : 'no'],
        ['address', m.address],
        ['reported', gone ? 'its lease ended' : `${seconds(m.ageMs)} ago`],
      ]),
      el('p', { class: 'reason' }, m.reason || '—'));
    return card;
  }

  function renderZones(state) {
    const zones = $('zones');
    zones.replaceChildren(...state.zones.map((zone) => el('div', { class: 'zone', 'data-zone': zone.zone },
      el('h3', {}, zone.zone),
      ...(zone.members.length === 0 ? [el('p', { class: 'muted' }, 'no member')] : zone.members.map(memberCard)))));
  }

  function renderCandidates(state) {
    const select = $('switchover-candidate');
    const chosen = select.value;
    const names = state.zones.flatMap((z) => z.members).filter((m) => m.role !== 'leader' && m.goneSinceMs === null).map((m) => m.name);
    select.replaceChildren(el('option', { value: '' }, 'the healthiest replica'), ...names.map((n) => el('option', { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
    const replicas = $('scale-replicas');
    if (state.spec !== null && document.activeElement !== replicas) replicas.value = String(state.spec.nodes - 1);
  }

  function renderRouter(router) {
    const box = $('router');
    if (router === null) return box.replaceChildren(el('p', { class: 'muted' }, 'no router known'));
    if (router.status === null) return box.replaceChildren(el('p', { class: 'error' }, `${router.url}: ${router.error}`));
    const s = router.status;
    const rows = ['rw', 'ro'].map((endpoint) => {
      const e = s.endpoints[endpoint];
      const conns = Object.entries(e.connections).map(([member, n]) => `${member}: ${n}`).join(', ') || 'none';
      return el('tr', { 'data-endpoint': endpoint }, el('td', {}, endpoint), el('td', {}, conns), el('td', {}, e.waiting), el('td', {}, e.heldTotal ?? '–'), el('td', {}, e.refusedTotal), el('td', {}, `${bytes(e.receivedBytesTotal)} / ${bytes(e.sentBytesTotal)}`));
    });
    box.replaceChildren(
      dl([
        ['rw goes to', s.routes.rw === null ? 'nobody' : s.routes.holdRw ? `${s.routes.rw} (new connections wait)` : s.routes.rw],
        ['ro goes to', s.routes.ro.join(', ') || 'nobody'],
        ['why', s.routes.reason],
        ['engine', s.failingClosed ? `${s.engine}, failing closed: etcd unread` : s.engine],
      ], 'kv'),
      el('table', {}, el('thead', {}, el('tr', {}, ...['endpoint', 'connections', 'waiting', 'held', 'refused', 'in / out'].map((h) => el('th', {}, h)))), el('tbody', {}, ...rows)));
  }

  function renderController(state) {
    const box = $('controller');
    const parts = [];
    if (state.controller === null) parts.push(el('p', { class: 'muted' }, 'no active controller: nothing replaces dead nodes or scales'));
    else parts.push(dl([['active', state.controller.name], ['plan', state.controller.plan || '—']], 'kv'));
    const a = state.autoscale;
    if (a !== null) {
      const current = a.current === null ? 'no data' : a.current.toFixed(1);
      parts.push(el('h3', {}, 'autoscaler'), dl([
        ['enabled', a.enabled ? 'yes' : 'no'],
        ['metric', `${a.metric} = ${current} (target ${a.target})`],
        ['replicas', `${a.replicas} (min ${a.minReplicas}, max ${a.maxReplicas})`],
        ['next', a.decision],
        ['why', a.reason],
      ], 'kv'));
      parts[parts.length - 1].id = 'autoscale';
    }
    if (state.spec !== null) parts.push(el('h3', {}, 'spec'), dl([['nodes', state.spec.nodes], ['zones', state.spec.zones.join(', ')], ['class', state.spec.instanceClass], ['replace after', `${state.spec.replaceAfterSeconds} s`]], 'kv'));
    box.replaceChildren(...parts);
  }

  function renderBackups(backups) {
    const section = $('backups-section');
    section.hidden = backups === null;
    if (backups === null) return;
    const parts = [el('p', {}, backups.summary), dl(backups.rows.map((r) => [r.label, r.value]), 'kv')];
    if (backups.table) {
      parts.push(el('table', {}, el('thead', {}, el('tr', {}, ...backups.table.columns.map((c) => el('th', {}, c)))), el('tbody', {}, ...backups.table.rows.map((row) => el('tr', {}, ...row.map((cell) => el('td', {}, cell)))))));
    }
    $('backups').replaceChildren(...parts);
  }

  function render(state) {
    $('cluster-name').textContent = state.cluster;
    document.title = `Keel ${state.cluster}: ${state.leader ?? 'no leader'}`;
    $('leader').textContent = state.leader ?? 'none';
    $('leader').className = state.leader === null ? 'error' : '';
    $('timeline').textContent = state.timeline ?? '–';
    $('sync-mode').textContent = state.synchronousMode;
    const pending = state.switchover;
    $('switchover-pending').hidden = pending === null;
    if (pending !== null) $('switchover-pending').textContent = `${pending.failover ? 'failover' : 'switchover'} pending: ${pending.from ?? 'no leader'} -> ${pending.to ?? 'the healthiest replica'}`;
    $('etcd-error').hidden = state.etcd.error === null;
    $('etcd-error').textContent = state.etcd.error === null ? '' : `etcd cannot be read (showing the last good read): ${state.etcd.error}`;
    renderZones(state);
    renderCandidates(state);
    renderRouter(state.router);
    renderController(state);
    renderBackups(state.backups);
  }

  function eventItem(e) {
    return el('li', { 'data-kind': e.kind }, el('span', { class: 'time' }, time(e.atMs)), el('span', { class: 'source' }, e.source), el('span', { class: 'kind' }, e.kind), el('span', { class: 'message' }, e.message));
  }

  function addEvent(e) {
    const list = $('events');
    list.prepend(eventItem(e));
    while (list.children.length > 200) list.lastChild.remove();
  }

  function connect() {
    const source = new EventSource('/api/events');
    const badge = $('connection');
    source.addEventListener('open', () => {
      badge.textContent = 'live';
      badge.className = 'badge live';
    });
    source.addEventListener('error', () => {
      badge.textContent = 'reconnecting…';
      badge.className = 'badge waiting';
    });
    source.addEventListener('hello', (m) => {
      const hello = JSON.parse(m.data);
      if (hello.state) render(hello.state);
      charts.reset(hello.samples, hello.marks);
      $('events').replaceChildren(...hello.events.slice().reverse().map(eventItem));
    });
    source.addEventListener('state', (m) => render(JSON.parse(m.data)));
    source.addEventListener('sample', (m) => {
      const { sample, mark } = JSON.parse(m.data);
      charts.push(sample, mark);
    });
    source.addEventListener('event', (m) => addEvent(JSON.parse(m.data)));
  }

  function showResult(ok, text) {
    const result = $('action-result');
    result.textContent = text;
    result.className = ok ? 'ok' : 'refused';
  }

  function showSession(session) {
    csrf = session.signedIn ? session.csrf : null;
    $('signed-in').hidden = !session.signedIn;
    $('signed-in').textContent = session.signedIn ? `signed in with ${session.via === 'token' ? 'the token' : 'your certificate'}` : '';
    $('sign-out-button').hidden = !session.signedIn;
    $('sign-in-form').hidden = session.signedIn;
  }

  async function call(method, path, body, headers) {
    const response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(csrf ? { 'x-keel-csrf': csrf } : {}), ...(headers || {}) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    return { ok: response.ok, status: response.status, json };
  }

  async function act(path, body) {
    try {
      const answer = await call('POST', path, body);
      // a dashboard that restarted forgot its sessions: sign in again
      if (answer.status === 401) showSession({ signedIn: false });
      if (answer.ok) showResult(true, answer.json.message);
      else showResult(false, answer.json ? `${answer.json.code}: ${answer.json.message}` : `refused (${answer.status})`);
    } catch (err) {
      showResult(false, `the dashboard did not answer: ${err.message}`);
    }
  }

  function wire() {
    $('switchover-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const candidate = $('switchover-candidate').value;
      void act('/api/switchover', candidate === '' ? {} : { candidate });
    });
    $('scale-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void act('/api/scale', { replicas: Number($('scale-replicas').value) });
    });
    $('config-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void act('/api/config', { set: [$('config-setting').value.trim()] });
    });
    $('sign-in-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim();
      const answer = await call('POST', '/api/session', undefined, { authorization: `Bearer ${token}` });
      $('token-input').value = '';
      if (answer.ok) showSession(answer.json);
      else showResult(false, answer.json ? `${answer.json.code}: ${answer.json.message}` : `refused (${answer.status})`);
    });
    $('cert-sign-in-button').addEventListener('click', async () => {
      const answer = await call('POST', '/api/session');
      if (answer.ok) showSession(answer.json);
      else showResult(false, answer.json ? `${answer.json.code}: ${answer.json.message}` : `refused (${answer.status})`);
    });
    $('sign-out-button').addEventListener('click', async () => {
      await call('DELETE', '/api/session');
      showSession({ signedIn: false });
    });
  }

  async function start() {
    charts = window.KeelCharts.create($('charts'));
    wire();
    connect();
    const session = await call('GET', '/api/session');
    if (session.ok) {
      showSession(session.json);
      $('cert-sign-in-button').hidden = !session.json.certificate;
    }
  }

  void start();
})();
