/**
 * The demo's synthetic "deals near me" data, generated locally. Pure: a seeded
 * random source comes in, rows and points come out, so the same seed gives
 * the same dataset and the benchmark compares like with like.
 */

export interface Metro {
  name: string;
  lat: number;
  lon: number;
}

/** Real city centres; deals cluster around them the way shops do. */
export const metros: readonly Metro[] = [
  { name: 'Paris', lat: 48.8566, lon: 2.3522 },
  { name: 'Berlin', lat: 52.52, lon: 13.405 },
  { name: 'New York', lat: 40.7128, lon: -74.006 },
  { name: 'Tokyo', lat: 35.6762, lon: 139.6503 },
  { name: 'São Paulo', lat: -23.5505, lon: -46.6333 },
];

/** One standard deviation of the distance from a city centre. */
export const spreadKm = 15;

export const categories = ['food', 'coffee', 'fitness', 'beauty', 'books', 'electronics', 'fashion', 'cinema', 'travel', 'groceries'] as const;

const adjectives = ['Half-price', 'Two-for-one', 'Happy-hour', 'Weekend', 'Early-bird', 'Flash', 'Student', 'Family'];

export const minDeals = 1000;
export const maxDeals = 5_000_000;
export const defaultDeals = 100_000;

/** A uniform number in [0, 1). */
export type Random = () => number;

/** mulberry32: small, fast and good enough to scatter points; not for secrets. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal sample (Box-Muller). */
export function gaussian(random: Random): number {
  // 1 - u keeps log() away from 0
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

const kmPerDegreeLat = 111.32;

export interface Point {
  lat: number;
  lon: number;
}

/** A point around a random metro, `spreadKm` apart on average per axis. */
export function randomPoint(random: Random): Point {
  const metro = metros[Math.floor(random() * metros.length)]!;
  const northKm = gaussian(random) * spreadKm;
  const eastKm = gaussian(random) * spreadKm;
  const lat = metro.lat + northKm / kmPerDegreeLat;
  const lon = metro.lon + eastKm / (kmPerDegreeLat * Math.cos((metro.lat * Math.PI) / 180));
  return { lat: Math.max(-90, Math.min(90, lat)), lon: ((((lon + 180) % 360) + 360) % 360) - 180 };
}

export interface DealRow {
  title: string;
  category: string;
  lat: number;
  lon: number;
  priceCents: number;
  expiresAtMs: number;
  createdAtMs: number;
}

const hourMs = 3_600_000;
const dayMs = 24 * hourMs;

/**
 * One deal. About one in ten has already expired, so the "open deals" filter
 * in the readers' query has work to do, as it would in production.
 */
export function randomDeal(random: Random, nowMs: number): DealRow {
  const { lat, lon } = randomPoint(random);
  const category = categories[Math.floor(random() * categories.length)]!;
  const adjective = adjectives[Math.floor(random() * adjectives.length)]!;
  const expired = random() < 0.1;
  const expiresAtMs = expired ? nowMs - random() * 7 * dayMs : nowMs + hourMs + random() * 30 * dayMs;
  return {
    title: `${adjective} ${category} #${Math.floor(random() * 1e6)}`,
    category,
    lat,
    lon,
    // mostly small amounts, now and then a big-ticket item
    priceCents: Math.round(100 + 20_000 * random() ** 3),
    expiresAtMs,
    createdAtMs: nowMs - random() * 30 * dayMs,
  };
}

/** Column arrays for one `INSERT ... SELECT FROM unnest(...)`: one round trip per batch. */
export interface DealColumns {
  title: string[];
  category: string[];
  lon: number[];
  lat: number[];
  priceCents: number[];
  expiresAt: string[];
  createdAt: string[];
}

export function dealBatch(random: Random, count: number, nowMs: number): DealColumns {
  const cols: DealColumns = { title: [], category: [], lon: [], lat: [], priceCents: [], expiresAt: [], createdAt: [] };
  for (let i = 0; i < count; i++) {
    const d = randomDeal(random, nowMs);
    cols.title.push(d.title);
    cols.category.push(d.category);
    cols.lon.push(d.lon);
    cols.lat.push(d.lat);
    cols.priceCents.push(d.priceCents);
    cols.expiresAt.push(new Date(d.expiresAtMs).toISOString());
    cols.createdAt.push(new Date(d.createdAtMs).toISOString());
  }
  return cols;
}

export const createTableSql = `CREATE TABLE IF NOT EXISTS deals (
  id bigserial PRIMARY KEY,
  title text NOT NULL,
  category text NOT NULL,
  position geography(Point, 4326) NOT NULL,
  price_cents int NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
)`;

export const createIndexSql = 'CREATE INDEX IF NOT EXISTS deals_position_gist ON deals USING gist (position)';

export const insertBatchSql = `INSERT INTO deals (title, category, position, price_cents, expires_at, created_at)
SELECT t, c, ST_SetSRID(ST_MakePoint(x, y), 4326)::geography, p, e, cr
FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::int[], $6::timestamptz[], $7::timestamptz[]) AS u(t, c, x, y, p, e, cr)`;

export const batchParams = (cols: DealColumns): unknown[] => [cols.title, cols.category, cols.lon, cols.lat, cols.priceCents, cols.expiresAt, cols.createdAt];

/** The readers' question: the 10 nearest open deals within 2 km. $1 lon, $2 lat. */
export const nearestDealsSql = `SELECT id, title, price_cents, ST_Distance(position, pt) AS meters
FROM deals, (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography AS pt) AS q
WHERE ST_DWithin(position, pt, 2000) AND expires_at > now()
ORDER BY position <-> pt
LIMIT 10`;

/** A writer's new deal; $1..$5 as in DealRow. */
export const insertDealSql = `INSERT INTO deals (title, category, position, price_cents, expires_at)
VALUES ($1, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5, $6)
RETURNING id`;

/** A writer expires one of its own deals: it stops being "open" at once. */
export const expireDealSql = 'UPDATE deals SET expires_at = now() WHERE id = $1';
