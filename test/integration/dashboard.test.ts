/**
 * `keel dashboard` in a real browser (Debian's Chromium driven by
 * playwright-core) against a real cluster with its router and controller, as
 * `keel up` runs them: the page shows the leader and the members by zone; a
 * switchover from the page is refused without the token (and without the
 * session's CSRF token, and from another origin) and works with it; after
 * SIGKILL of the leader node the page shows the new leader within 2 s of etcd
 * naming it, without a reload. Screenshots go to test/artifacts/.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import https from 'node:https';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardUrl } from '../../src/providers/local-layout.js';
import { isReady } from '../../src/supervisor/local-cluster.js';
import { sleep } from '../../src/util/clock.js';
import { readPidFile } from '../../src/util/process.js';
import { apiRequest } from '../support/api-client.js';
import { launchChromium, screenshot } from '../support/browser.js';
import { TestCluster } from '../support/cluster.js';

const portBase = 20200;

/** POST /api/session over TLS with a client certificate; the status and body. */
function signInWith(url: string, ca: string, pair: { cert: string; key: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = https.request(`${url}api/session`, { method: 'POST', ca: readFileSync(ca), cert: readFileSync(pair.cert), key: readFileSync(pair.key), agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    request.on('error', reject);
    request.end();
  });
}

describe('keel dashboard in Chromium', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let page: Page;
  let url = '';
  let token = '';
  const navigations: string[] = [];
  const foreignRequests: string[] = [];

  const leaderInEtcd = async () => (await cluster.view()).leader?.value.name ?? null;
  const pageLeader = async () => (await page.textContent('#leader'))?.trim() ?? '';
  const result = async () => (await page.textContent('#action-result'))?.trim() ?? '';
  const clearResult = () => page.evaluate(() => (document.getElementById('action-result')!.textContent = ''));
  const untilResult = () => page.waitForFunction(() => document.getElementById('action-result')!.textContent !== '', null, { timeout: 10_000 });

  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase, nodes: 3, controller: true, dashboard: true });
    url = dashboardUrl(cluster.file);
    const deadline = Date.now() + 20_000;
    while (!existsSync(cluster.layout.dashboardTokenFile) && Date.now() < deadline) await sleep(100);
    token = readFileSync(cluster.layout.dashboardTokenFile, 'utf8').trim();
    browser = await launchChromium();
    // Chromium takes no CA for one context: the first test checks the certificate against the cluster CA itself
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1300 } });
    page = await context.newPage();
    page.on('framenavigated', (frame) => frame === page.mainFrame() && navigations.push(frame.url()));
    page.on('request', (request) => new URL(request.url()).hostname !== '127.0.0.1' && foreignRequests.push(request.url()));
  });

  afterAll(async () => {
    await browser?.close().catch(() => undefined);
    await cluster?.stop();
  });

  it("serves HTTPS with the cluster's certificate; the page shows the leader and every member by zone, with its assets from the dashboard alone", async () => {
    const state = await apiRequest(`${url}api/state`, { caFile: cluster.layout.caFiles.cert });
    expect(state.status).toBe(200);
    const leader = (await leaderInEtcd())!;
    expect(state.json.leader).toBe(leader);

    await page.goto(url);
    await page.waitForFunction((name) => document.getElementById('leader')!.textContent === name, leader, { timeout: 15_000 });
    expect(await page.getAttribute(`[data-member="${leader}"]`, 'data-role')).toBe('leader');
    const cards = await page.$$eval('[data-member]', (nodes) => nodes.map((n) => ({ name: n.getAttribute('data-member'), role: n.getAttribute('data-role'), zone: n.closest('[data-zone]')!.getAttribute('data-zone') })));
    expect(cards.map((c) => c.name).sort()).toEqual(['node1', 'node2', 'node3']);
    expect(new Set(cards.map((c) => c.zone))).toEqual(new Set(['local-a', 'local-b', 'local-c']));
    expect(cards.filter((c) => c.role === 'leader')).toHaveLength(1);
    // each card says why its member does what it does
    expect(await page.textContent(`[data-member="${leader}"] .reason`)).toMatch(/leader/);
    // the router's routes and the controller's plan arrive through the same stream
    await page.waitForFunction((name) => document.getElementById('router')!.textContent!.includes(`rw goes to${name}`), leader, { timeout: 15_000 });
    await page.waitForFunction(() => document.getElementById('controller')!.textContent!.includes('plan'), null, { timeout: 15_000 });
    await page.waitForSelector('#events li');
    expect(await page.$$eval('#charts canvas', (c) => c.length)).toBeGreaterThanOrEqual(3);
    expect(await page.isHidden('#backups-section')).toBe(true);
    expect(foreignRequests).toEqual([]);
    await screenshot(page, 'dashboard-leader');
  });

  it('a switchover from the page is refused without the token, and works with it', async () => {
    const leader = (await leaderInEtcd())!;
    const candidate = ['node1', 'node2', 'node3'].find((n) => n !== leader)!;

    await page.selectOption('#switchover-candidate', candidate);
    await clearResult();
    await page.click('#switchover-button');
    await untilResult();
    expect(await result()).toContain('KEEL_UNAUTHORIZED');

    await page.fill('#token-input', 'a-wrong-token-that-is-long-enough-to-try');
    await clearResult();
    await page.click('#sign-in-button');
    await untilResult();
    expect(await result()).toContain('KEEL_FORBIDDEN');
    expect(await page.isHidden('#signed-in')).toBe(true);

    // from another origin, even with the right token
    const foreign = await apiRequest(`${url}api/switchover`, { method: 'POST', token, body: JSON.stringify({ candidate }), headers: { origin: 'https://elsewhere.example' }, caFile: cluster.layout.caFiles.cert });
    expect(foreign.status).toBe(403);

    await page.fill('#token-input', token);
    await page.click('#sign-in-button');
    await page.waitForSelector('#signed-in:not([hidden])');
    expect(await page.isHidden('#sign-in-form')).toBe(true);
    // the session cookie alone does not act: the page's own requests carry the CSRF token
    const bare = await page.evaluate(() => fetch('/api/switchover', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).then((r) => r.status));
    expect(bare).toBe(403);
    expect((await cluster.view()).switchover).toBeNull();
    expect(await leaderInEtcd()).toBe(leader);

    await page.selectOption('#switchover-candidate', candidate);
    await clearResult();
    await page.click('#switchover-button');
    await untilResult();
    expect(await result()).toContain(`switchover requested: ${leader} -> ${candidate}`);
    await page.waitForFunction((name) => document.getElementById('leader')!.textContent === name, candidate, { timeout: 30_000 });
    await page.waitForFunction(() => [...document.querySelectorAll('#events li')].some((li) => li.textContent!.includes('switchover requested on the dashboard (signed in with the token)')), null, { timeout: 10_000 });
    await screenshot(page, 'dashboard-switchover');
    // the old leader back as a streaming replica before the next test kills the new one
    await cluster.waitFor('all three streaming from the new leader', (v) => isReady(v, 3), 60_000);
  });

  it("the operator's certificate signs in; another certificate of the cluster CA does not", async () => {
    const ca = cluster.layout.caFiles.cert;
    const operator = await signInWith(url, ca, cluster.layout.clientTls('operator'));
    expect(operator.status, operator.body).toBe(200);
    expect(JSON.parse(operator.body)).toMatchObject({ signedIn: true, via: 'certificate' });
    const router = await signInWith(url, ca, cluster.layout.clientTls('router'));
    expect(router.status).toBe(401);
  });

  it('keel dashboard refuses flags that do not go together, before it starts anything (exit 2)', () => {
    const keel = (args: string[]) => spawnSync(process.execPath, ['bin/keel.js', 'dashboard', ...args], { encoding: 'utf8', timeout: 30_000 });
    const mixed = keel(['--dir', cluster.layout.dir, '--tls-cert', '/tmp/x.crt']);
    expect(mixed.status).toBe(2);
    expect(mixed.stderr).toContain('--tls-cert goes with --etcd');
    const plain = keel(['--etcd', 'https://127.0.0.1:1', '--cluster', 'test', '--listen', '127.0.0.1:20299']);
    expect(plain.status).toBe(2);
    expect(plain.stderr).toContain('serves HTTPS only');
  });

  it('after SIGKILL of the leader node the page shows the new leader within 2 s of etcd naming it, without a reload', async () => {
    const old = (await leaderInEtcd())!;
    expect(await pageLeader()).toBe(old);
    const loadsBefore = navigations.length;
    await page.evaluate((oldName) => {
      const leader = document.getElementById('leader')!;
      const w = window as unknown as { seen: { name: string; atMs: number } | null };
      w.seen = null;
      new MutationObserver(() => {
        const name = leader.textContent!;
        if (w.seen === null && name !== oldName && name !== 'none') w.seen = { name, atMs: Date.now() };
      }).observe(leader, { childList: true, characterData: true, subtree: true });
    }, old);

    let named: { name: string; atMs: number } | null = null;
    const stopWatch = await cluster.dcs.watch(() => {
      void cluster.view().then((v) => {
        const name = v.leader?.value.name;
        if (named === null && name !== undefined && name !== old) named = { name, atMs: Date.now() };
      });
    });
    const killedAtMs = Date.now();
    try {
      for (const file of [cluster.layout.agentPidFile(old), `${cluster.layout.dataDir(old)}/postmaster.pid`, cluster.layout.guardPidFile(old)]) {
        const pid = readPidFile(file);
        if (pid !== null) process.kill(pid, 'SIGKILL');
      }
      await page.waitForFunction(() => (window as unknown as { seen: unknown }).seen !== null, null, { timeout: 60_000 });
      const deadline = Date.now() + 5000;
      while (named === null && Date.now() < deadline) await sleep(20);
    } finally {
      await stopWatch();
    }
    const seen = (await page.evaluate(() => (window as unknown as { seen: { name: string; atMs: number } }).seen))!;
    expect(named).not.toBeNull();
    const inEtcd = named! as { name: string; atMs: number };
    console.log(`leader ${old} killed; etcd named ${inEtcd.name} after ${inEtcd.atMs - killedAtMs} ms, the page showed it ${seen.atMs - inEtcd.atMs} ms later (${seen.atMs - killedAtMs} ms after the kill)`);
    expect(seen.name).toBe(inEtcd.name);
    expect(seen.atMs - inEtcd.atMs).toBeLessThan(2000);
    expect(navigations.length).toBe(loadsBefore);
    expect(await page.getAttribute(`[data-member="${seen.name}"]`, 'data-role')).toBe('leader');
    // the dead node stays on the page, as last seen, once its key is gone with its lease
    await page.waitForSelector(`[data-member="${old}"][data-role="gone"]`, { timeout: 15_000 });
    await screenshot(page, 'dashboard-failover');
  });
});
