// CloudFront Function (JavaScript runtime 2.0), viewer request on /api/*.
// Sends API requests to the region named by the key "active_region" in the distribution's
// KeyValueStore; without that key, to the primary region (the behavior's own origin).
// runbooks/region-failover.md flips the key. Origin groups cannot fail over POST, PUT or DELETE,
// so the API behavior needs this switch; reads on other paths fail over by themselves.
import cf from 'cloudfront';

const kvs = cf.kvs();
const PRIMARY_REGION = '__PRIMARY_REGION__';
const KNOWN_REGIONS = __KNOWN_REGIONS__;

async function handler(event) {
    let active = PRIMARY_REGION;
    try {
        active = await kvs.get('active_region');
    } catch (err) {
        // No key (or the store is unreachable): keep the primary region.
    }
    if (active !== PRIMARY_REGION && KNOWN_REGIONS.includes(active)) {
        cf.selectRequestOriginById(active);
    }
    return event.request;
}
