/** A controller over a test cluster's local provider, as `keel controller --dir` builds one, with a quick pace for tests. */
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import { localZones } from '../../src/controller/spec.js';
import type { Dcs } from '../../src/dcs/types.js';
import { defaultLocalInstanceClass } from '../../src/postgres/instance-class.js';
import type { Provider } from '../../src/providers/types.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';

export function localController(name: string, dcs: Dcs, provider: Provider, over: Partial<ControllerOptions> = {}): Controller {
  return new Controller({
    name,
    dcs,
    provider,
    limits: { maxNodes: 20, instanceClasses: null },
    defaults: { zones: localZones, instanceClass: defaultLocalInstanceClass },
    clock: systemClock,
    logger: silentLogger(),
    tickMs: 250,
    ...over,
  });
}
