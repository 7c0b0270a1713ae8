/**
 * SIGHUP for the long-running commands that only talk to etcd (router,
 * controller): read the etcd client certificate again after `keel certs
 * rotate`, instead of SIGHUP's default of ending the process.
 */
import type { EtcdDcs } from '../dcs/etcd.js';
import { describeError } from '../errors.js';
import type { Logger } from '../util/log.js';

export function reloadEtcdOnHangUp(dcs: EtcdDcs, logger: Logger, withTls: boolean): void {
  process.on('SIGHUP', () => {
    if (!withTls) {
      logger.info({ signal: 'SIGHUP' }, 'SIGHUP: nothing to reload (etcd without TLS)');
      return;
    }
    dcs.reloadCredentials().then(
      () => logger.info({ signal: 'SIGHUP' }, 'etcd client certificate read again: new connections use it'),
      (err: unknown) => logger.error({ signal: 'SIGHUP', err: describeError(err) }, 'kept the etcd client certificate in use'),
    );
  });
}
