/**
 * The monthly on-demand cost of a planned deployment: an ESTIMATE from list
 * prices written down here, never fetched (the plan calls no AWS API). Pure.
 *
 * Prices change and differ by region: the table says where they come from and
 * when; a region not in it is priced as us-east-1 and the estimate says so; an
 * instance type not in it is left out of the total and listed as unpriced.
 */

export const awsPriceList = {
  source:
    'AWS on-demand list prices, Linux, per hour or GB-month: https://aws.amazon.com/ec2/pricing/on-demand/, ' +
    'https://aws.amazon.com/ebs/pricing/ (gp3 storage; its baseline 3,000 IOPS and 125 MB/s are free), ' +
    'https://aws.amazon.com/elasticloadbalancing/pricing/ (Network Load Balancer)',
  /** when the figures were copied from those pages; check them before a budget depends on them */
  asOf: '2024',
  /** AWS's own convention for a month of hours */
  hoursPerMonth: 730,
  regions: {
    'us-east-1': {
      instanceHourUsd: { 't3.small': 0.0208, 't3.medium': 0.0416, 'm6i.large': 0.096, 'm6i.xlarge': 0.192 } as Record<string, number>,
      gp3GbMonthUsd: 0.08,
      nlbHourUsd: 0.0225,
      nlcuHourUsd: 0.006,
    },
    'eu-west-1': {
      instanceHourUsd: { 't3.small': 0.0228, 't3.medium': 0.0456, 'm6i.large': 0.107, 'm6i.xlarge': 0.214 } as Record<string, number>,
      gp3GbMonthUsd: 0.088,
      nlbHourUsd: 0.0252,
      nlcuHourUsd: 0.006,
    },
  },
} as const;

export type PricedRegion = keyof typeof awsPriceList.regions;

/** What the plan asks to be priced: counts and sizes, nothing else. */
export interface CostInput {
  region: string;
  /** instance type -> how many run all month */
  instances: Record<string, number>;
  /** every gp3 volume's size, root volumes included */
  gp3GiB: number;
  loadBalancer: { assumedLcu: number } | null;
}

export interface CostLine {
  item: string;
  quantity: number;
  unit: 'instance-hour' | 'GB-month' | 'NLB-hour' | 'NLCU-hour';
  unitPriceUsd: number;
  /** quantity x unit price x hours in a month (GB-months: no hours), rounded to the cent */
  monthlyUsd: number;
}

export interface CostEstimate {
  /** it is one; the CLI prints the word */
  kind: 'estimate';
  region: string;
  pricesOf: PricedRegion;
  source: string;
  asOf: string;
  hoursPerMonth: number;
  lines: CostLine[];
  totalMonthlyUsd: number;
  /** instance types the table has no price for: not in the total */
  unpriced: string[];
  /** what costs money and is not counted */
  notIncluded: string[];
}

const cents = (usd: number): number => Math.round(usd * 100) / 100;

export function estimateMonthlyCost(input: CostInput): CostEstimate {
  const pricesOf: PricedRegion = input.region in awsPriceList.regions ? (input.region as PricedRegion) : 'us-east-1';
  const prices = awsPriceList.regions[pricesOf];
  const hours = awsPriceList.hoursPerMonth;
  const lines: CostLine[] = [];
  const unpriced: string[] = [];
  for (const [type, count] of Object.entries(input.instances)) {
    const price = prices.instanceHourUsd[type];
    if (price === undefined) {
      unpriced.push(`${count} x ${type}`);
      continue;
    }
    lines.push({ item: `${type} instances`, quantity: count, unit: 'instance-hour', unitPriceUsd: price, monthlyUsd: cents(count * price * hours) });
  }
  lines.push({ item: 'gp3 volumes', quantity: input.gp3GiB, unit: 'GB-month', unitPriceUsd: prices.gp3GbMonthUsd, monthlyUsd: cents(input.gp3GiB * prices.gp3GbMonthUsd) });
  if (input.loadBalancer !== null) {
    lines.push({ item: 'Network Load Balancer', quantity: 1, unit: 'NLB-hour', unitPriceUsd: prices.nlbHourUsd, monthlyUsd: cents(prices.nlbHourUsd * hours) });
    const lcu = input.loadBalancer.assumedLcu;
    lines.push({ item: `NLB capacity (${lcu} NLCU assumed)`, quantity: lcu, unit: 'NLCU-hour', unitPriceUsd: prices.nlcuHourUsd, monthlyUsd: cents(lcu * prices.nlcuHourUsd * hours) });
  }
  const totalMonthlyUsd = cents(lines.reduce((sum, line) => sum + line.monthlyUsd, 0));
  return {
    kind: 'estimate',
    region: input.region,
    pricesOf,
    source: awsPriceList.source,
    asOf: awsPriceList.asOf,
    hoursPerMonth: hours,
    lines,
    totalMonthlyUsd,
    unpriced,
    notIncluded: [
      ...(pricesOf === input.region ? [] : [`${input.region}'s own prices: priced as ${pricesOf}`]),
      'data transfer between zones (replication, cross-zone load balancing: $0.01/GB each way)',
      'a NAT gateway or VPC endpoints the private subnets need for packages and SSM',
      'EBS snapshots and backups',
      'KMS requests of customer-managed keys, CloudWatch',
      'taxes, savings plans and reserved-instance discounts',
    ],
  };
}
