// The fluxtrail evidence UI (contract §11). No framework and no build step: the DOM is built
// with `h()`, which only ever sets text (textContent) and attributes — every value from Git or
// Flux is attacker-controlled text and is never parsed as HTML. Pages route by their own URL
// under /api/ui, so every page can be linked and opened directly.
'use strict';

const BASE = '/api/ui';
const TOKEN_KEY = 'fluxtrail-token';
// Behind Azure Functions the page may be opened with a function key (`?code=`): the API calls
// carry it on. fluxtrail's own token is never put in a URL.
const FUNCTION_KEY = new URLSearchParams(location.search).get('code');
const STATES = ['failed', 'stalled', 'pending', 'progressing', 'applied', 'superseded', 'discarded'];

class AuthNeeded extends Error {}

// ---- DOM ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An http(s) URL from the data, or null: a `javascript:` link is never made. */
function safeUrl(u) {
  return typeof u === 'string' && /^https?:\/\//i.test(u) ? u : null;
}

/** A link inside the UI (navigated without reloading). */
function link(path, params, ...children) {
  const href = path + query(params);
  return h('a', { href, onclick: (e) => navigate(e, href) }, ...children);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  if (FUNCTION_KEY) q.set('code', FUNCTION_KEY);
  const s = q.toString();
  return s ? '?' + s : '';
}

function navigate(e, href) {
  if (e && (e.ctrlKey || e.metaKey || e.shiftKey || e.button === 1)) return;
  if (e) e.preventDefault();
  history.pushState(null, '', href);
  render();
}

function stateBadge(state, text) {
  return h('span', { class: 'state st-' + (state || 'none') }, text || state || '—');
}

function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/:00Z$/, 'Z');
}

function short(sha) {
  return sha ? String(sha).slice(0, 10) : '—';
}

function subject(message) {
  return message ? String(message).split('\n')[0] : '';
}

function params() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

// ---- API ---------------------------------------------------------------------------------

async function api(path, params, accept) {
  const url = path + query(params);
  const headers = { Accept: accept || 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(url, { headers });
  if (r.status === 401) throw new AuthNeeded();
  if (accept === 'text/csv' && r.ok) return r.blob();
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new Error((body && body.error && body.error.message) || 'HTTP ' + r.status);
    e.status = r.status;
    throw e;
  }
  return body;
}

// ---- Router ------------------------------------------------------------------------------

const ROUTES = [
  [/^\/api\/ui\/?$/, 'matrix', matrixPage],
  [/^\/api\/ui\/matrix\/?$/, 'matrix', matrixPage],
  [/^\/api\/ui\/commits\/([0-9a-fA-F]{7,64})\/?$/, 'matrix', commitPage],
  [/^\/api\/ui\/changes\/?$/, 'changes', changesPage],
  [/^\/api\/ui\/incidents\/?$/, 'incidents', incidentsPage],
  [/^\/api\/ui\/dora\/?$/, 'dora', doraPage],
];

let rendering = 0;

async function render() {
  const main = document.getElementById('app');
  const mine = ++rendering;
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path));
  document.getElementById('forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
  for (const a of document.querySelectorAll('header nav a')) {
    a.href = a.getAttribute('href').split('?')[0] + query({});
    if (route && a.dataset.nav === route[1]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.setAttribute('aria-busy', 'true');
  let content;
  try {
    if (!route) {
      content = [h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', link(BASE + '/matrix', {}, 'Rollouts'))];
    } else {
      content = await route[2](path.match(route[0]), params());
    }
  } catch (e) {
    if (mine !== rendering) return;
    content = e instanceof AuthNeeded ? tokenPrompt() : [h('h1', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, e.message)];
  }
  if (mine !== rendering) return; // a newer navigation won
  main.replaceChildren(...[content].flat(Infinity).filter(Boolean));
  main.setAttribute('aria-busy', 'false');
  document.title = 'fluxtrail — ' + ((main.querySelector('h1') || {}).textContent || 'evidence');
  for (const f of afterRender.splice(0)) f();
}

/** Work that needs the page in the document (charts measure their container). */
const afterRender = [];

function tokenPrompt() {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true });
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      render();
    },
  }, h('label', { for: 'token' }, 'API token', input), h('button', { type: 'submit', class: 'primary' }, 'Use token'));
  return [
    h('h1', {}, 'API token needed'),
    h('p', {}, 'This fluxtrail requires its API token (FLUXTRAIL_API_TOKEN). It is kept for this browser session only and sent as a bearer token, never in a URL.'),
    form,
  ];
}

// ---- Rollout matrix ----------------------------------------------------------------------

const expanded = new Set();

async function matrixPage(_m, p) {
  let repository = p.repository || '';
  const ref = p.ref || 'main';
  // The followed branches (for the default and the suggestions) only when none is named:
  // listing every object is a scan on a big fleet.
  const objects = repository ? [] : (await api('/api/objects', {})).objects || [];
  const follows = new Map();
  for (const o of objects) {
    if (o.follows) follows.set(o.follows.repository + ' ' + o.follows.gitRef, o.follows);
  }
  if (!repository && follows.size) {
    const first = [...follows.values()].sort((a, b) => a.repository.localeCompare(b.repository))[0];
    repository = first.repository;
  }
  const datalist = h('datalist', { id: 'repositories' },
    [...new Set([...follows.values()].map((f) => f.repository))].map((r) => h('option', { value: r })));
  const repoInput = h('input', { id: 'repository', name: 'repository', value: repository, list: 'repositories', size: 40, required: true });
  const refInput = h('input', { id: 'ref', name: 'ref', value: ref, size: 18 });
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      navigate(null, BASE + '/matrix' + query({ repository: repoInput.value.trim(), ref: refInput.value.trim() }));
    },
  }, h('label', { for: 'repository' }, 'Repository', repoInput), datalist,
  h('label', { for: 'ref' }, 'Branch', refInput), h('button', { type: 'submit', class: 'primary' }, 'Show'));
  const head = [h('h1', {}, 'Rollouts'), form];
  if (!repository) return [...head, h('p', { class: 'muted' }, 'No Flux object follows a branch yet: name a repository (github.com/org/repo).')];
  const limit = p.limit || 25;
  // Each commit's targets summarised per cluster (a big fleet has thousands per commit);
  // a cluster's objects are read when it is expanded.
  const page = await api('/api/commits', { repository, ref, limit, cursor: p.cursor, view: 'clusters' });
  const commits = page.commits || [];
  if (!commits.length) return [...head, h('p', { class: 'muted' }, 'No pushed commits of this branch are known.')];
  const clusters = new Map();
  const add = (cluster, key) => {
    if (!clusters.has(cluster)) clusters.set(cluster, new Set());
    if (key) clusters.get(cluster).add(key);
  };
  for (const c of commits) for (const s of c.clusters || []) add(s.cluster);
  const gitRef = ref.startsWith('refs/') ? ref : 'refs/heads/' + ref;
  for (const o of objects) {
    if (o.follows && o.follows.repository === repository && o.follows.gitRef === gitRef) add(o.cluster, objKey(o));
  }
  // The targets of expanded clusters, by commit.
  const detail = new Map();
  const expand = async (cluster) => {
    const full = await api('/api/commits', { repository, ref, limit, cursor: p.cursor, cluster });
    for (const c of full.commits || []) {
      detail.set(c.sha + ' ' + cluster, c.targets || []);
      for (const t of c.targets || []) add(cluster, objKey(t));
    }
    expanded.add(cluster);
    if (ready) drawTable();
  };
  let ready = false;
  for (const c of [...expanded]) if (clusters.has(c)) await expand(c);
  const names = [...clusters.keys()].sort();
  const table = h('table', { class: 'matrix', id: 'matrix' });
  const drawTable = () => {
    const cols = [];
    for (const c of names) {
      if (expanded.has(c)) for (const k of [...clusters.get(c)].sort()) cols.push({ cluster: c, object: k });
      else cols.push({ cluster: c });
    }
    const headRow = h('tr', {}, h('th', { scope: 'col' }, 'Commit'), h('th', { scope: 'col' }, 'Approval'), h('th', { scope: 'col' }, 'Pushed'),
      cols.map((col) => h('th', { scope: 'col', class: 'cell' },
        col.object ? [col.cluster, h('br'), h('span', { class: 'muted' }, col.object)] : [
          col.cluster, ' ',
          h('button', {
            type: 'button', 'aria-expanded': expanded.has(col.cluster) ? 'true' : 'false',
            'aria-label': 'Show the objects of ' + col.cluster,
            onclick: () => expand(col.cluster),
          }, '+'),
        ],
        col.object && col.object === [...clusters.get(col.cluster)].sort()[0] ? [' ', h('button', {
          type: 'button', 'aria-expanded': 'true', 'aria-label': 'Collapse ' + col.cluster,
          onclick: () => { expanded.delete(col.cluster); drawTable(); },
        }, '−')] : null)));
    const rows = commits.map((c) => {
      const commit = c.commit || {};
      const author = commit.author ? commit.author.name || commit.author.email : null;
      return h('tr', {},
        h('th', { scope: 'row' }, link(BASE + '/commits/' + c.sha, {}, h('span', { class: 'sha' }, short(c.sha))), ' ',
          subject(commit.message), author ? h('div', { class: 'muted' }, author) : null),
        h('td', {}, approvalBadge(c.approval)),
        h('td', { class: 'muted' }, when(commit.pushedAt)),
        cols.map((col) => h('td', { class: 'cell' }, col.object
          ? cell(detail.get(c.sha + ' ' + col.cluster) || [], col)
          : summaryCell((c.clusters || []).find((s) => s.cluster === col.cluster)))));
    });
    table.replaceChildren(h('thead', {}, headRow), h('tbody', {}, rows));
  };
  drawTable();
  ready = true;
  const legend = h('div', { class: 'legend', 'aria-label': 'States' }, STATES.map((s) => stateBadge(s)));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of commits' },
    p.cursor ? link(BASE + '/matrix', { repository, ref }, 'Newest') : null,
    page.next ? link(BASE + '/matrix', { repository, ref, cursor: page.next }, 'Older commits') : h('span', { class: 'muted' }, 'No older commits'));
  return [...head, h('p', { class: 'muted' }, repository + ' · ' + gitRef + ' · ' + commits.length + ' commits, newest push first'),
    legend, h('div', { class: 'scroll' }, table), pager];
}

function objKey(o) {
  return o.kind + '/' + o.namespace + '/' + o.name;
}

/** A cluster's cell: the most urgent state of its objects, with how many are in it. */
function cell(targets, col) {
  const mine = targets.filter((t) => t.cluster === col.cluster && (!col.object || objKey(t) === col.object));
  if (!mine.length) return h('span', { class: 'muted', title: 'not expected here' }, '—');
  const worst = STATES.find((s) => mine.some((t) => t.state === s)) || mine[0].state;
  const n = mine.filter((t) => t.state === worst).length;
  return stateBadge(worst, mine.length > 1 ? `${worst} ${n}/${mine.length}` : worst);
}

/** A cluster's cell from its summary: the most urgent state, with how many are in it. */
function summaryCell(s) {
  if (!s || !s.objects) return h('span', { class: 'muted', title: 'not expected here' }, '—');
  const worst = STATES.find((st) => s.states[st]) || Object.keys(s.states)[0];
  const n = s.states[worst] || 0;
  return stateBadge(worst, s.objects > 1 ? `${worst} ${n}/${s.objects}` : worst);
}

function approvalBadge(a) {
  if (!a) return h('span', { class: 'badge no' }, 'no approval');
  const n = (a.approvers || []).length;
  return h('span', { class: 'badge ' + (n ? 'ok' : 'no') }, `#${a.number} · ${n} approver${n === 1 ? '' : 's'}`);
}

// ---- Commit ------------------------------------------------------------------------------

/** Over this many targets a commit's page shows one section per cluster, drawn when opened. */
const GROUP_OVER = 200;
/** The most "still expected" entries listed. */
const WAITING_SHOWN = 50;

async function commitPage(m) {
  const sha = m[1].toLowerCase();
  let ev;
  try {
    ev = await api('/api/commits/' + sha, {});
  } catch (e) {
    if (e.status === 404) return [h('h1', {}, 'Commit ' + short(sha)), h('p', { class: 'warn' }, 'Nothing is known of this commit: no push described it and no Flux object reported it.')];
    throw e;
  }
  const c = ev.commit;
  const a = ev.approval;
  const targets = ev.targets || [];
  // Each object's source: what it follows (from its state), read per cluster. A commit on a
  // big fleet reached thousands of objects: then each cluster is a section of its own,
  // whose objects (and their sources) are read and drawn when it is opened.
  const sources = new Map();
  const loadSources = async (cluster) => {
    const objs = (await api('/api/objects', { cluster })).objects || [];
    for (const o of objs) sources.set(cluster + '/' + objKey(o), o);
  };
  const clusters = [...new Set(targets.map((t) => t.cluster))].sort();
  const grouped = targets.length > GROUP_OVER;
  if (!grouped) await Promise.all(clusters.map(loadSources));
  const facts = h('dl', { class: 'facts' },
    fact('Commit', h('span', { class: 'sha' }, ev.sha)),
    c ? [
      fact('Repository', c.repository),
      fact('Refs', (c.refs || []).join(', ') || '—'),
      fact('Author', c.author ? [c.author.name, c.author.email ? ' <' + c.author.email + '>' : ''] : '—'),
      fact('Committed', when(c.timestamp)),
      fact('Pushed', c.pushedAt ? [when(c.pushedAt), c.pushedBy ? ' by ' + c.pushedBy : ''] : '—'),
      fact('Described by', c.source === 'api' ? 'the Git host\'s API (its push webhook was lost)' : 'its push webhook (' + c.provider + ')'),
    ] : fact('Commit', h('span', { class: 'warn' }, 'Flux reported this revision; no push described it.')));
  const approval = a ? h('dl', { class: 'facts', id: 'approval' },
    fact('Pull request', safeUrl(a.url) ? h('a', { href: safeUrl(a.url), rel: 'noreferrer' }, '#' + a.number) : '#' + a.number),
    fact('Opened by', a.author || '—'),
    fact('Merged by', [a.mergedBy || '—', a.mergedAt ? ' at ' + when(a.mergedAt) : '']),
    fact('Approvers', (a.approvers || []).length ? a.approvers.join(', ') : h('span', { class: 'badge no' }, 'none'))) :
    h('p', { class: 'badge no', id: 'approval' }, 'No approval record: no merged pull request is known for this commit.');
  const waiting = targets.filter((t) => t.state === 'pending' || t.state === 'stalled');
  const row = (t) => {
    const o = sources.get(t.cluster + '/' + objKey(t));
    return h('tr', {},
      h('td', {}, t.cluster),
      h('td', {}, t.kind + ' ', h('strong', {}, t.name)),
      h('td', {}, t.namespace),
      h('td', {}, o && o.follows ? o.follows.repository + ' @ ' + o.follows.gitRef : '—'),
      h('td', {}, stateBadge(t.state)),
      h('td', { class: 'sha' }, t.revision || '—'),
      h('td', {}, timeline(t)),
      h('td', {}, t.reason ? [h('strong', {}, t.reason), h('div', { class: 'muted' }, t.message || '')] : '—'),
      h('td', {}, t.supersededBy ? link(BASE + '/commits/' + t.supersededBy, {}, h('span', { class: 'sha' }, short(t.supersededBy))) : '—'));
  };
  const table = (ts, attrs) => h('div', { class: 'scroll' }, h('table', attrs,
    h('thead', {}, h('tr', {}, ['Cluster', 'Flux object', 'Namespace', 'Source', 'State', 'Revision', 'Timeline', 'Reconciliation', 'Superseded by'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, ts.map(row))));
  const where = !grouped ? table(targets, { id: 'targets' }) : h('div', { id: 'targets' },
    h('p', { class: 'muted' }, `${targets.length} objects on ${clusters.length} clusters: open a cluster to see its objects.`),
    clusters.map((cluster) => {
      const ts = targets.filter((t) => t.cluster === cluster);
      const counts = new Map();
      for (const t of ts) counts.set(t.state, (counts.get(t.state) || 0) + 1);
      const body = h('div', {});
      const section = h('details', { class: 'cluster-targets' },
        h('summary', {}, h('strong', {}, cluster), ` — ${ts.length} object${ts.length === 1 ? '' : 's'}: `,
          [...counts].map(([state, n]) => [stateBadge(state, `${n} ${state}`), ' '])),
        body);
      section.addEventListener('toggle', async () => {
        if (!section.open || body.firstChild) return;
        body.append(h('p', { class: 'muted' }, 'Loading…'));
        await loadSources(cluster);
        body.replaceChildren(table(ts, {}));
      });
      return section;
    }));
  const shown = waiting.slice(0, WAITING_SHOWN);
  return [
    h('h1', {}, 'Commit ' + short(ev.sha), c ? ' — ' + subject(c.message) : ''),
    facts,
    c && c.message ? h('pre', { class: 'message', 'aria-label': 'Commit message' }, c.message) : null,
    h('h2', {}, 'Approval'), approval,
    h('h2', {}, 'Still expected'),
    waiting.length ? h('ul', { id: 'waiting' }, shown.map((t) => h('li', {}, stateBadge(t.state), ' on ', t.cluster, ' ', objKey(t), ' since ', when(t.firstSeenAt))),
      waiting.length > shown.length ? h('li', { class: 'muted' }, `and ${waiting.length - shown.length} more (see the clusters below)`) : null)
      : h('p', { class: 'muted' }, 'Nowhere: every object that follows its branch has reported it or a later commit.'),
    h('h2', {}, 'Where it went'),
    where,
  ];
}

function fact(name, ...value) {
  return [h('dt', {}, name), h('dd', {}, ...value)];
}

function timeline(t) {
  return h('ol', { class: 'timeline muted' },
    h('li', {}, 'first seen ', when(t.firstSeenAt)),
    t.appliedAt ? h('li', {}, 'applied ', when(t.appliedAt)) : null,
    t.lastEventAt ? h('li', {}, 'last event ', when(t.lastEventAt)) : null);
}

// ---- Changes -----------------------------------------------------------------------------

const FILTERS = ['cluster', 'namespace', 'repository', 'from', 'to', 'approved'];

function dayStart(d) {
  return d ? d + 'T00:00:00Z' : '';
}

async function changesPage(_m, p) {
  const q = { cluster: p.cluster, namespace: p.namespace, repository: p.repository, from: dayStart(p.from), to: dayStart(p.to), approved: p.approved };
  const [page, summary] = await Promise.all([
    api('/api/changes', { ...q, limit: 50, cursor: p.cursor }),
    api('/api/changes/summary', { cluster: p.cluster, from: q.from, to: q.to }),
  ]);
  const inputs = {};
  const field = (name, label, attrs) => {
    inputs[name] = h('input', { id: 'f-' + name, name, value: p[name] || '', ...attrs });
    return h('label', { for: 'f-' + name }, label, inputs[name]);
  };
  inputs.approved = h('select', { id: 'f-approved', name: 'approved' },
    [['', 'any'], ['true', 'approved'], ['false', 'not approved']].map(([v, t]) => h('option', { value: v, selected: (p.approved || '') === v }, t)));
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      const next = {};
      for (const f of FILTERS) next[f] = inputs[f].value.trim();
      navigate(null, BASE + '/changes' + query(next));
    },
  }, field('cluster', 'Cluster', { size: 14 }), field('namespace', 'Namespace', { size: 14 }),
  field('repository', 'Repository', { size: 28 }), field('from', 'From', { type: 'date' }), field('to', 'To (exclusive)', { type: 'date' }),
  h('label', { for: 'f-approved' }, 'Approval', inputs.approved), h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  const csv = h('button', {
    type: 'button', id: 'csv',
    onclick: async () => {
      const blob = await api('/api/changes', { ...q, format: 'csv' }, 'text/csv');
      const a = h('a', { href: URL.createObjectURL(blob), download: 'fluxtrail-changes.csv' });
      document.body.append(a);
      a.click();
      a.remove();
    },
  }, 'Download CSV (whole window)');
  const cov = summary.coverage === null ? '—' : (100 * summary.coverage).toFixed(1) + '%';
  const cards = h('div', { class: 'cards', id: 'coverage' },
    [['Approval coverage', cov], ['Changes (commit × cluster)', summary.changes], ['Approved', summary.approved], ['Exempt', summary.exempt], ['Unapproved', summary.unapproved]]
      .map(([k, v]) => h('div', { class: 'card' }, h('div', { class: 'muted' }, k), h('div', { class: 'big' }, v))));
  const rows = (page.changes || []).map((c) => h('tr', {},
    h('td', {}, when(c.time)), h('td', {}, c.cluster), h('td', {}, c.kind + ' ' + c.namespace + '/' + c.name),
    h('td', {}, stateBadge(c.state)),
    h('td', {}, link(BASE + '/commits/' + c.sha, {}, h('span', { class: 'sha' }, short(c.sha))), ' ', c.subject || ''),
    h('td', {}, c.author || '—'), h('td', {}, c.pushedBy || '—'),
    h('td', {}, c.approval ? approvalBadge(c.approval) : '—'),
    h('td', {}, c.approved ? h('span', { class: 'badge ok' }, 'yes') : c.exempt ? h('span', { class: 'badge' }, 'exempt: ' + c.exempt) : h('span', { class: 'badge no' }, 'no'))));
  const keep = {};
  for (const f of FILTERS) keep[f] = p[f];
  return [
    h('h1', {}, 'Changes'), form, cards, h('p', {}, csv),
    h('div', { class: 'scroll' }, h('table', { id: 'changes' },
      h('thead', {}, h('tr', {}, ['Time', 'Cluster', 'Object', 'State', 'Commit', 'Author', 'Pushed by', 'Pull request', 'Approved'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No change in this window.'))))),
    h('nav', { class: 'pager', 'aria-label': 'Pages of changes' },
      p.cursor ? link(BASE + '/changes', keep, 'Newest') : null,
      page.next ? link(BASE + '/changes', { ...keep, cursor: page.next }, 'Older changes') : h('span', { class: 'muted' }, 'No older changes')),
  ];
}

// ---- Incidents and groups ----------------------------------------------------------------

async function incidentsPage(_m, p) {
  const state = p.state === 'resolved' ? 'resolved' : 'open';
  const [incidents, groups] = await Promise.all([api('/api/incidents', { state }), api('/api/groups', { state, limit: 50 })]);
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Incident state' },
    ['open', 'resolved'].map((s) => {
      const a = link(BASE + '/incidents', { state: s }, s === 'open' ? 'Open' : 'Resolved');
      if (s === state) a.setAttribute('aria-current', 'page');
      return a;
    }));
  const groupRows = (groups.groups || []).map((g) => h('tr', {},
    h('td', { class: 'sha' }, g.groupId), h('td', {}, stateBadge(g.state)),
    h('td', {}, g.sha ? link(BASE + '/commits/' + g.sha, {}, h('span', { class: 'sha' }, short(g.sha))) : g.revision || '—'),
    h('td', {}, when(g.openedAt), g.resolvedAt ? [' → ', when(g.resolvedAt)] : ''),
    h('td', {}, (g.clusters || []).join(', ')),
    h('td', {}, h('ul', {}, (g.members || []).map((mb) => h('li', {}, stateBadge(mb.state), ' ', mb.cluster, ' ', mb.kind + ' ' + mb.namespace + '/' + mb.name))))));
  const incRows = (incidents.incidents || []).map((i) => h('tr', {},
    h('td', {}, i.object.cluster), h('td', {}, i.object.kind + ' ' + i.object.namespace + '/' + i.object.name),
    h('td', {}, stateBadge(i.state)), h('td', {}, when(i.openedAt), i.resolvedAt ? [' → ', when(i.resolvedAt)] : ''),
    h('td', {}, i.sha ? link(BASE + '/commits/' + i.sha, {}, h('span', { class: 'sha' }, short(i.sha))) : i.revision || '—'),
    h('td', {}, h('strong', {}, i.reason), h('div', { class: 'muted' }, i.message)),
    h('td', { class: 'num' }, i.failures)));
  const empty = (n, text) => h('tr', {}, h('td', { colspan: n, class: 'muted' }, text));
  return [
    h('h1', {}, 'Incidents and groups'), tabs,
    h('h2', {}, 'Groups (one per cause)'),
    h('div', { class: 'scroll' }, h('table', { id: 'groups' },
      h('thead', {}, h('tr', {}, ['Group', 'State', 'Cause', 'Opened → resolved', 'Clusters', 'Members'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, groupRows.length ? groupRows : empty(6, 'No ' + state + ' group.')))),
    h('h2', {}, 'Incidents (one per object)'),
    h('div', { class: 'scroll' }, h('table', { id: 'incidents' },
      h('thead', {}, h('tr', {}, ['Cluster', 'Object', 'State', 'Opened → resolved', 'Commit', 'Failure', 'Failures'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, incRows.length ? incRows : empty(7, 'No ' + state + ' incident.')))),
  ];
}

// ---- Delivery metrics --------------------------------------------------------------------

const WEEKS = 12;

async function doraPage(_m, p) {
  const cluster = p.cluster || '';
  const repository = p.repository || '';
  const now = new Date();
  const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
  const week = 7 * 86400000;
  const windows = Array.from({ length: WEEKS }, (_, i) => [new Date(end - (WEEKS - i) * week), new Date(end - (WEEKS - 1 - i) * week)]);
  const [current, ...series] = await Promise.all([
    api('/api/dora', { cluster, repository }),
    ...windows.map(([from, to]) => api('/api/dora', { cluster, repository, from: from.toISOString(), to: to.toISOString() })),
  ]);
  const clusterInput = h('input', { id: 'd-cluster', name: 'cluster', value: cluster, size: 14 });
  const repoInput = h('input', { id: 'd-repository', name: 'repository', value: repository, size: 28 });
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      navigate(null, BASE + '/dora' + query({ cluster: clusterInput.value.trim(), repository: repoInput.value.trim() }));
    },
  }, h('label', { for: 'd-cluster' }, 'Cluster (empty: fleet)', clusterInput), h('label', { for: 'd-repository' }, 'Repository', repoInput),
  h('button', { type: 'submit', class: 'primary' }, 'Show'));
  const fmt = {
    rate: (v) => (v === null || v === undefined ? '—' : (100 * v).toFixed(1) + '%'),
    secs: (d) => (!d || d.p50 === null ? '—' : `${dur(d.p50)} (p90 ${dur(d.p90)}, n ${d.n})`),
  };
  const rowOf = (name, f) => h('tr', {},
    h('th', { scope: 'row' }, name), h('td', { class: 'num' }, f.deployments), h('td', { class: 'num' }, (f.deploymentsPerDay || 0).toFixed(2)),
    h('td', { class: 'num' }, fmt.rate(f.changeFailureRate)), h('td', {}, fmt.secs(f.leadTimeSeconds)), h('td', {}, fmt.secs(f.pushToApplySeconds)),
    h('td', {}, fmt.secs(f.timeToRestoreSeconds)), h('td', { class: 'num' }, f.openIncidents));
  const table = h('table', { id: 'dora' },
    h('thead', {}, h('tr', {}, ['Cluster', 'Deployments', 'Per day', 'Change failure rate', 'Lead time p50', 'Push → apply p50', 'Time to restore p50', 'Open incidents'].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, (current.clusters || []).map((c) => rowOf(c.cluster, c)), current.fleet ? rowOf('fleet', current.fleet) : null));
  const pick = (r) => (cluster ? (r.clusters || []).find((c) => c.cluster === cluster) || {} : r.fleet || {});
  const xs = windows.map(([, to]) => to.getTime() / 1000);
  const charts = [
    ['Deployments per day', series.map((r) => pick(r).deploymentsPerDay ?? null), (v) => v.toFixed(2)],
    ['Change failure rate (%)', series.map((r) => (pick(r).changeFailureRate ?? null) === null ? null : 100 * pick(r).changeFailureRate), (v) => v.toFixed(1) + '%'],
    ['Lead time p50 (hours)', series.map((r) => hours(pick(r).leadTimeSeconds)), (v) => v.toFixed(1) + ' h'],
    ['Time to restore p50 (hours)', series.map((r) => hours(pick(r).timeToRestoreSeconds)), (v) => v.toFixed(1) + ' h'],
  ];
  const chartBoxes = charts.map(([title, ys, show], i) => {
    const box = h('figure', { class: 'chart', id: 'chart-' + i, 'aria-label': title + ', weekly, last ' + WEEKS + ' weeks' });
    const rows = xs.map((x, j) => h('tr', {}, h('td', {}, when(new Date(x * 1000).toISOString()).slice(0, 10)), h('td', { class: 'num' }, ys[j] === null ? '—' : show(ys[j]))));
    const alt = h('details', {}, h('summary', {}, title + ' as a table'), h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Week ending'), h('th', { scope: 'col' }, title))), h('tbody', {}, rows)));
    // A chart with nothing to draw says so (an empty grid reads as a broken chart).
    if (ys.every((y) => y === null)) box.append(h('figcaption', { class: 'muted' }, 'Nothing to show in these ' + WEEKS + ' weeks.'));
    afterRender.push(() => drawChart(box, title, xs, ys));
    return h('div', {}, box, alt);
  });
  return [
    h('h1', {}, 'Delivery metrics'), form,
    h('p', { class: 'muted' }, 'From what really ran: a deployment is a commit\'s first report on a cluster. Last 30 days: ', when(current.from), ' → ', when(current.to), '.'),
    h('div', { class: 'scroll' }, table),
    h('h2', {}, (cluster || 'Fleet') + ', week by week'),
    h('div', { class: 'charts' }, chartBoxes),
  ];
}

function hours(d) {
  return !d || d.p50 === null || d.p50 === undefined ? null : d.p50 / 3600;
}

function dur(s) {
  if (s === null || s === undefined) return '—';
  const a = Math.abs(s);
  const t = a < 120 ? a.toFixed(0) + ' s' : a < 7200 ? (a / 60).toFixed(0) + ' min' : a < 172800 ? (a / 3600).toFixed(1) + ' h' : (a / 86400).toFixed(1) + ' d';
  return (s < 0 ? '−' : '') + t;
}

function drawChart(box, title, xs, ys) {
  if (typeof uPlot === 'undefined') return;
  const width = Math.max(320, box.clientWidth - 16);
  // eslint-disable-next-line no-undef
  new uPlot({
    title, width, height: 220,
    scales: { x: { time: true } },
    series: [{}, { label: title, stroke: '#1f6feb', width: 2, fill: 'rgba(31,111,235,0.08)', spanGaps: true, points: { show: true } }],
    axes: [{}, { size: 60 }],
  }, [xs, ys], box);
}

// ---- Start -------------------------------------------------------------------------------

window.addEventListener('popstate', render);
document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    render();
  });
  for (const a of document.querySelectorAll('header nav a')) a.addEventListener('click', (e) => navigate(e, a.getAttribute('href')));
  render();
});
