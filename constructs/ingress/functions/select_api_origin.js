// CloudFront Function (JavaScript runtime 2.0), viewer request on /api/*.
// Sends API requests to the region named by the key "active_region" in the distribution's
// KeyValueStore; without that key, to the primary region (the behavior's own origin).
// runbooks/region-failover.md flips the key. Origin groups cannot fail over POST, PUT or DELETE,
// so the API behavior needs this switch; reads on other paths fail over by themselves.
//
// The store's helper methods (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/functions-custom-methods.html):
// get() rejects when the key does not exist, exists() resolves to true or false. A rejected get() is
// therefore either "no key" (the normal state: the primary) or a failed read; exists() tells them apart.
// A failed read is logged (the function's CloudWatch log group, us-east-1) and keeps the behavior's
// own origin, the primary: the function cannot know where the key points, the primary is right in the
// normal state, and while failed over a request the primary cannot serve fails just as a request
// refused here would (failing closed would add failures in the normal state and save none).
import cf from 'cloudfront';

const kvs = cf.kvs();
const KEY = 'active_region';
const PRIMARY_REGION = '__PRIMARY_REGION__';
const KNOWN_REGIONS = __KNOWN_REGIONS__;

async function activeRegion() {
    try {
        return await kvs.get(KEY);
    } catch (getError) {
        let present;
        try {
            present = await kvs.exists(KEY);
        } catch (existsError) {
            console.log(`${KEY}: store unreadable, keeping ${PRIMARY_REGION}: ${getError} / ${existsError}`);
            return PRIMARY_REGION;
        }
        if (present) {
            console.log(`${KEY}: read failed, keeping ${PRIMARY_REGION}: ${getError}`);
        }
        return PRIMARY_REGION;  // no key: the primary
    }
}

async function handler(event) {
    const active = await activeRegion();
    if (active !== PRIMARY_REGION) {
        if (KNOWN_REGIONS.includes(active)) {
            cf.selectRequestOriginById(active);
        } else {
            console.log(`${KEY}: unknown region ${active}, keeping ${PRIMARY_REGION}`);
        }
    }
    return event.request;
}
