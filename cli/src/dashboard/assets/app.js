// havctl dashboard: the page. Hand-written, no framework, nothing loaded from elsewhere.
//
// The page follows /events (server-sent events): `snapshot` (everything, on connect and after
// the page lagged), `status` (nodes, groups, alarms), `timeline` (one entry), `rollout` (one
// job), `link` (the coordinator link). Text from the fleet is only ever set as textContent.
'use strict';

const TIMELINE_SHOWN = 500;
const SLA_EVERY_MS = 60000;

const state = {
  about: {},
  link: { connected: false, error: '' },
  pageConnected: false,
  status: null,
  timeline: [],
  rollouts: new Map(),
  holders: new Map(), // instance -> holders string last rendered (to flash changes)
  confirming: null, // { node, undrain } awaiting a second click
  pending: new Set(), // nodes with a call in flight
  messages: new Map(), // node -> { ok, text }
  priorities: new Map(), // node -> the priority typed in its card (kept across re-renders)
};

const $ = (role) => document.querySelector(`[data-role="${role}"]`);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function two(n) { return String(n).padStart(2, '0'); }

function clock(ms) {
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function day(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
}

// ---- Header, link, notice ------------------------------------------------------------------

function renderHeader() {
  const who = $('who');
  who.replaceChildren(
    'as ', el('b', { text: state.about.operator || '?' }),
    el('span', { class: `role ${state.about.role || ''}`, text: state.about.role || '' }),
    ' → ', el('code', { text: state.about.coordinator || '' }),
  );
  const link = $('link');
  let cls;
  let text;
  if (!state.pageConnected) {
    cls = 'waiting';
    text = 'reconnecting to havctl…';
  } else if (state.link.connected) {
    cls = 'live';
    text = 'live';
  } else {
    cls = 'down';
    text = `coordinator unreachable: ${state.link.error || 'connecting'}`;
  }
  link.className = `link ${cls}`;
  $('link-text').textContent = text;
}

function notice(text, isError) {
  const box = $('notice');
  box.textContent = text;
  box.className = isError ? 'notice error' : 'notice';
  box.hidden = false;
}

// ---- Alarms ---------------------------------------------------------------------------------

function renderAlarms() {
  const box = $('alarms');
  const alarms = (state.status && state.status.alarms) || [];
  if (alarms.length === 0) {
    box.replaceChildren(el('div', { class: 'alarm none', 'data-kind': 'none' }, 'No alarms'));
    return;
  }
  box.replaceChildren(...alarms.map((alarm) => el('div', {
    class: `alarm ${alarm.severity}`,
    'data-kind': alarm.kind,
    'data-subject': alarm.subject,
  }, el('span', { class: 'kind', text: alarm.kind }), alarm.text)));
}

// ---- Groups, nodes, VIPs --------------------------------------------------------------------

function nodeCard(node) {
  const name = node.name;
  const connected = node.connected;
  const drained = node.drained;
  const pending = state.pending.has(name);
  const confirming = state.confirming && state.confirming.node === name ? state.confirming : null;
  const config = `config ${node.config_version}/${node.desired_config_version}`;
  const stale = node.config_version !== node.desired_config_version;
  const actions = el('div', { class: 'actions' });
  if (confirming) {
    const verb = confirming.undrain ? 'Undrain' : 'Drain';
    actions.append(
      `${verb} ${name}?`,
      el('button', { class: 'confirm', 'data-action': 'confirm', text: verb }),
      el('button', { 'data-action': 'cancel', text: 'Cancel' }),
    );
  } else if (drained) {
    actions.append(el('button', { 'data-action': 'undrain', disabled: pending, text: 'Undrain' }));
  } else {
    actions.append(el('button', { class: 'danger', 'data-action': 'drain', disabled: pending, text: 'Drain' }));
  }
  const overridden = (node.instances || []).some((i) => i.priority_override !== null && i.priority_override !== undefined);
  actions.append(
    el('input', { type: 'number', min: '1', max: '254', value: state.priorities.get(name) || '50', class: 'priority', 'data-role': 'priority-input', title: 'priority for every instance of the node' }),
    el('button', { 'data-action': 'priority', disabled: pending, text: 'Set priority' }),
  );
  if (overridden) {
    actions.append(el('button', { 'data-action': 'priority-clear', disabled: pending, text: 'Clear priority' }));
  }
  if (pending) actions.append(el('span', { class: 'muted', text: 'asking the coordinator…' }));
  const message = state.messages.get(name);
  return el('div', {
    class: `node${connected ? '' : ' down'}${drained ? ' drained' : ''}`,
    'data-node': name,
    'data-connected': String(connected),
  },
  el('span', { class: `dot ${connected ? 'up' : 'down'}`, title: connected ? 'control link up' : 'no control link' }),
  el('span', { class: 'name', text: name }),
  el('span', { class: `badge${stale ? ' warn' : ''}`, title: 'running / desired config version', text: config }),
  drained ? el('span', { class: 'badge warn', text: 'drained' }) : null,
  overridden ? el('span', { class: 'badge warn', 'data-role': 'overridden', text: 'priority override' }) : null,
  connected ? null : el('span', { class: 'badge bad', text: 'link down' }),
  node.software_version ? el('span', { class: 'badge', text: `v${node.software_version}` }) : null,
  actions,
  message ? el('div', {
    class: `node-message ${message.ok ? 'ok' : 'error'}`,
    'data-role': 'node-message',
    text: message.text,
  }) : null);
}

function instanceRow(instance, nodes) {
  const holders = instance.holders.join(', ');
  const previous = state.holders.get(instance.instance);
  state.holders.set(instance.instance, holders);
  const holderCell = el('td', {
    class: `holder${holders ? '' : ' none'}`,
    'data-role': 'holder',
  }, holders || 'none');
  if (instance.stale_holders.length) {
    holderCell.append(el('span', { class: 'stale', text: `last reported by ${instance.stale_holders.join(', ')} (link down)` }));
  }
  const members = new Map(instance.members.map((m) => [m.node, m]));
  const cells = nodes.map((name) => {
    const member = members.get(name);
    if (!member) return el('td', { class: 'muted', text: '—' });
    const override = member.priority_override !== null && member.priority_override !== undefined
      ? ` (override ${member.priority_override})` : '';
    return el('td', { 'data-node': name },
      el('span', { class: `state ${member.state}${member.connected ? '' : ' stale'}`, text: member.state }),
      el('span', { class: 'prio', title: `configured ${member.configured_priority}${override}`, text: String(member.effective_priority) }));
  });
  return el('tr', {
    class: previous !== undefined && previous !== holders ? 'changed' : null,
    'data-instance': instance.instance,
    'data-holders': holders,
  },
  el('td', { class: 'vip' }, instance.vips.length ? instance.vips.join(' ') : '(none seen)',
    el('div', { class: 'muted', text: instance.instance })),
  el('td', { class: 'num', text: String(instance.vrid) }),
  holderCell,
  ...cells);
}

function renderGroups() {
  const box = $('groups');
  if (!state.status) return;
  const byName = new Map(state.status.nodes.map((n) => [n.name, n]));
  const groups = state.status.groups;
  if (groups.length === 0) {
    box.replaceChildren(el('p', { class: 'empty', text: 'The coordinator knows no node yet.' }));
    return;
  }
  box.replaceChildren(...groups.map((group) => {
    const nodes = group.nodes;
    const title = group.name || 'nodes without a config';
    const head = el('h3', {}, title, ' ', el('span', {
      class: 'muted',
      text: `${nodes.length} node${nodes.length === 1 ? '' : 's'} · ${group.instances.length} VIP${group.instances.length === 1 ? '' : 's'}`,
    }));
    const cards = el('div', { class: 'nodes' }, ...nodes.map((n) => byName.get(n)).filter(Boolean).map(nodeCard));
    let table = null;
    if (group.instances.length) {
      table = el('table', { class: 'vips' },
        el('thead', {}, el('tr', {},
          el('th', { text: 'VIP' }), el('th', { class: 'num', text: 'VRID' }), el('th', { text: 'Holder' }),
          ...nodes.map((n) => el('th', { text: n })))),
        el('tbody', {}, ...group.instances.map((i) => instanceRow(i, nodes))));
    }
    return el('article', { class: 'group', 'data-group': group.name }, head, cards, table);
  }));
}

// A transition is shown at once; the status that follows it confirms or corrects it.
function applyTransition(entry) {
  if (!state.status) return;
  let changed = false;
  for (const group of state.status.groups) {
    for (const instance of group.instances) {
      if (instance.instance !== entry.instance) continue;
      for (const member of instance.members) {
        if (member.node !== entry.node) continue;
        member.state = entry.to;
        member.holds = entry.to === 'master';
        changed = true;
      }
      instance.holders = instance.members
        .filter((m) => m.connected && m.holds && m.state === 'master')
        .map((m) => m.node);
      if (instance.holders.length) {
        state.status.alarms = state.status.alarms
          .filter((a) => !(a.kind === 'no-holder' && a.subject === instance.instance));
      }
    }
  }
  if (changed) {
    renderAlarms();
    renderGroups();
  }
}

async function act(node, undrain) {
  state.pending.add(node);
  state.messages.delete(node);
  renderGroups();
  const verb = undrain ? 'undrain' : 'drain';
  let ok = false;
  let text;
  try {
    const response = await fetch(`/api/nodes/${encodeURIComponent(node)}/${verb}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason: `${verb} from the dashboard` }),
    });
    const answer = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
    ok = Boolean(answer.ok);
    if (ok) {
      text = `${node} ${undrain ? 'undrained' : 'drained'}`;
      if (answer.moved && answer.moved.length) text += `: ${answer.moved.join(', ')}`;
    } else {
      text = `${verb} ${node}: ${answer.error || `HTTP ${response.status}`}`;
    }
  } catch (error) {
    text = `${verb} ${node}: havctl did not answer (${error})`;
  }
  state.pending.delete(node);
  state.messages.set(node, { ok, text });
  notice(text, !ok);
  renderGroups();
}

async function setPriority(node, priority) {
  state.pending.add(node);
  state.messages.delete(node);
  renderGroups();
  const clear = priority === null;
  const what = clear ? 'clear priority' : `priority ${priority}`;
  let ok = false;
  let text;
  try {
    const path = clear ? 'priority/clear' : 'priority';
    const response = await fetch(`/api/nodes/${encodeURIComponent(node)}/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(clear ? { reason: 'from the dashboard' } : { priority, reason: 'from the dashboard' }),
    });
    const answer = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
    ok = Boolean(answer.ok);
    text = ok ? `${node}: ${what} set` : `${what} on ${node}: ${answer.error || `HTTP ${response.status}`}`;
    if (ok && clear) text = `${node}: priority override cleared`;
  } catch (error) {
    text = `${what} on ${node}: havctl did not answer (${error})`;
  }
  state.pending.delete(node);
  state.messages.set(node, { ok, text });
  notice(text, !ok);
  renderGroups();
}

function onGroupsClick(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const card = button.closest('[data-node]');
  if (!card) return;
  const node = card.getAttribute('data-node');
  const action = button.getAttribute('data-action');
  if (action === 'priority') {
    const input = card.querySelector('[data-role="priority-input"]');
    const priority = Number(input && input.value);
    if (!Number.isInteger(priority) || priority < 1 || priority > 254) {
      notice('a priority is a whole number from 1 to 254', true);
      return;
    }
    setPriority(node, priority);
    return;
  }
  if (action === 'priority-clear') {
    setPriority(node, null);
    return;
  }
  if (action === 'drain' || action === 'undrain') {
    state.confirming = { node, undrain: action === 'undrain' };
  } else if (action === 'cancel') {
    state.confirming = null;
  } else if (action === 'confirm' && state.confirming) {
    const { undrain } = state.confirming;
    state.confirming = null;
    act(node, undrain);
    return;
  }
  renderGroups();
}

// ---- Timeline -------------------------------------------------------------------------------

function timelineItem(entry) {
  const failover = entry.kind === 'transition' && entry.failover;
  const alarm = entry.kind === 'split-brain' && !entry.resolved;
  const item = el('li', {
    class: failover ? 'failover' : (alarm ? 'alarm-entry' : null),
    'data-kind': entry.kind,
    'data-node': entry.node || null,
    title: day(entry.unix_ms),
  },
  el('span', { class: 'time', text: clock(entry.unix_ms) }),
  entry.node ? el('span', { class: 'node-name', text: entry.node }) : null,
  el('span', { class: 'text', text: entry.text }));
  if (entry.trace_url) {
    item.append(el('a', { href: entry.trace_url, target: '_blank', rel: 'noopener noreferrer', text: 'trace' }));
  }
  if (entry.cause) item.append(el('span', { class: 'cause', text: entry.cause }));
  return item;
}

function renderTimeline() {
  const list = $('timeline');
  const shown = state.timeline.slice(-TIMELINE_SHOWN).reverse();
  list.replaceChildren(...shown.map(timelineItem));
  $('timeline-empty').hidden = shown.length > 0;
}

function addTimeline(entry) {
  state.timeline.push(entry);
  if (state.timeline.length > TIMELINE_SHOWN) state.timeline.shift();
  const list = $('timeline');
  list.prepend(timelineItem(entry));
  while (list.children.length > TIMELINE_SHOWN) list.lastElementChild.remove();
  $('timeline-empty').hidden = true;
}

// ---- Rollouts -------------------------------------------------------------------------------

function renderRollouts() {
  const box = $('rollouts');
  const jobs = [...state.rollouts.values()].sort((a, b) => b.id - a.id);
  if (jobs.length === 0) {
    box.replaceChildren(el('p', { class: 'empty', text: 'No rollout seen since this dashboard started.' }));
    return;
  }
  box.replaceChildren(...jobs.map((job) => {
    const percent = job.total ? Math.round((100 * job.done) / job.total) : 0;
    const bar = el('div', { class: 'bar' }, el('span'));
    bar.firstChild.style.width = `${percent}%`;
    return el('div', { class: `rollout ${job.status}`, 'data-rollout': String(job.id) },
      el('div', {},
        el('b', { text: `job ${job.id}` }), ` ${job.status} · ${job.done}/${job.total} nodes · ${job.waves} waves`,
        job.who ? el('span', { class: 'muted', text: ` · ${job.who}${job.reason ? `: ${job.reason}` : ''}` }) : null),
      bar,
      job.error ? el('div', { class: 'node-message error', text: job.error }) : null,
      el('div', { class: 'steps' }, ...job.nodes.map((n) => el('span', {
        class: `step ${n.step}`,
        title: n.detail || '',
        text: `${n.node}: ${n.step}`,
      }))));
  }));
}

// ---- Availability ---------------------------------------------------------------------------

function span(ms) {
  if (ms < 60000) return `${Math.round(ms / 1000)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

async function loadSla() {
  const month = $('sla-month').value;
  const box = $('sla');
  try {
    const response = await fetch(`/api/sla?month=${encodeURIComponent(month)}`);
    const report = await response.json();
    if (!response.ok) {
      box.replaceChildren(el('p', { class: 'node-message error', text: report.error || `HTTP ${response.status}` }));
      return;
    }
    if (!month && report.month) $('sla-month').value = report.month;
    const rows = [];
    for (const [kind, list] of [['group', report.groups], ['vip', report.vips]]) {
      for (const a of list) {
        // null: nothing of the month was observed, so there is no figure.
        const known = a.availability_percent !== null;
        const good = known && a.availability_percent >= 99.99;
        rows.push(el('tr', { 'data-sla': `${kind}:${a.name}` },
          el('td', { class: 'muted', text: kind }),
          el('td', { class: 'mono', text: a.name }),
          el('td', known
            ? { class: `num avail ${good ? 'good' : 'bad'}`, text: `${a.availability_percent.toFixed(3)} %` }
            : { class: 'num muted', text: 'no data' }),
          el('td', { class: 'num', text: span(a.no_holder_ms) }),
          el('td', { class: 'num', text: span(a.split_brain_ms) }),
          el('td', { class: 'num', text: span(a.unobserved_ms) }),
          el('td', { class: 'num', text: String(a.failovers) })));
      }
    }
    if (rows.length === 0) {
      box.replaceChildren(el('p', { class: 'empty', text: `Nothing observed in ${report.month}.` }));
      return;
    }
    box.replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ...['', 'name', 'available', 'no holder', 'split', 'unobserved', 'failovers']
        .map((h, i) => el('th', { class: i >= 2 ? 'num' : null, text: h })))),
      el('tbody', {}, ...rows)));
  } catch (error) {
    box.replaceChildren(el('p', { class: 'node-message error', text: `availability: ${error}` }));
  }
}

// ---- The event stream -----------------------------------------------------------------------

function onSnapshot(data) {
  state.about = data.about;
  state.link = data.link;
  state.status = data.status;
  state.timeline = data.timeline;
  state.rollouts = new Map(data.rollouts.map((job) => [job.id, job]));
  renderHeader();
  renderAlarms();
  renderGroups();
  renderTimeline();
  renderRollouts();
}

function connect() {
  const events = new EventSource('/events');
  const on = (name, handler) => events.addEventListener(name, (message) => {
    handler(JSON.parse(message.data));
    document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
  });
  events.onopen = () => { state.pageConnected = true; renderHeader(); };
  events.onerror = () => { state.pageConnected = false; renderHeader(); };
  on('snapshot', (data) => { state.pageConnected = true; onSnapshot(data); });
  on('status', (status) => { state.status = status; renderAlarms(); renderGroups(); });
  on('link', (link) => { state.link = link; renderHeader(); });
  on('timeline', (entry) => {
    addTimeline(entry);
    if (entry.kind === 'transition') applyTransition(entry);
  });
  on('rollout', (job) => {
    state.rollouts.set(job.id, job);
    while (state.rollouts.size > 16) state.rollouts.delete(Math.min(...state.rollouts.keys()));
    renderRollouts();
  });
}

document.addEventListener('DOMContentLoaded', () => {
  document.body.dataset.loadedAt = String(Date.now());
  $('groups').addEventListener('click', onGroupsClick);
  $('groups').addEventListener('input', (event) => {
    const input = event.target.closest('[data-role="priority-input"]');
    const card = input && input.closest('[data-node]');
    if (card) state.priorities.set(card.getAttribute('data-node'), input.value);
  });
  const form = $('sla-form');
  form.addEventListener('submit', (event) => { event.preventDefault(); loadSla(); });
  $('sla-month').addEventListener('change', loadSla);
  connect();
  loadSla();
  setInterval(loadSla, SLA_EVERY_MS);
});
