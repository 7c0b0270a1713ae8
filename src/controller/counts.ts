import type { SpecValue } from '../model/values.js';
import type { AutoscaleDecision } from './autoscale.js';
import type { Plan } from './plan.js';

/** What a controller did since it started: the counters its /metrics shows (metrics.ts). */
export interface ControllerCounts {
  creations: number;
  /** creations that replace a node that was down */
  replacements: number;
  destructions: number;
  /** fences the provider confirmed, and attempts it did not */
  fencings: number;
  unconfirmedFencings: number;
  /** dead leaders' leases ended after a confirmed fence */
  leasesEnded: number;
  scaleOuts: number;
  scaleIns: number;
  failedActions: number;
}

export const noCounts = (): ControllerCounts => ({
  creations: 0,
  replacements: 0,
  destructions: 0,
  fencings: 0,
  unconfirmedFencings: 0,
  leasesEnded: 0,
  scaleOuts: 0,
  scaleIns: 0,
  failedActions: 0,
});

/** What /metrics reads of a controller (the Controller class has it). */
export interface MeasuredController {
  readonly active: boolean;
  readonly counts: ControllerCounts;
  readonly lastPlan: Plan | null;
  readonly lastAutoscale: AutoscaleDecision | null;
  readonly lastSpec: SpecValue | null;
}

/** The controllers this process runs (one under `keel controller`), for its /metrics listener. */
export const runningControllers = new Set<MeasuredController>();
