// Generates tests/data/shard_vectors.json: guild ids and the gateway pod the existing
// TypeScript helper picks for them (node's crypto md5), for pods = 3, 5 and 10.
// Run: node scripts/shard-vectors.js > tests/data/shard_vectors.json
'use strict';
const crypto = require('crypto');

// The helper, verbatim apart from taking the pod count as an argument.
function getGatewayPodForGuild(guildId, NUM_GATEWAY_PODS) {
  const hash = crypto.createHash('md5').update(guildId).digest();
  return hash.readUInt32BE(0) % NUM_GATEWAY_PODS;
}

// A fixed-seed generator so the vectors are reproducible: snowflake-shaped ids
// (timestamp << 22 | worker bits), plus a few short and non-numeric keys.
let state = 0x2545f4914f6cdd1dn;
function next() {
  state ^= state << 13n; state &= (1n << 64n) - 1n;
  state ^= state >> 7n;
  state ^= state << 17n; state &= (1n << 64n) - 1n;
  return state;
}
const ids = [];
for (let i = 0; i < 3000; i++) {
  const ms = next() % 300000000000n; // milliseconds since the Discord epoch
  ids.push(((ms << 22n) | (next() & 0x3fffffn)).toString());
}
ids.push('0', '1', '42', 'abc', 'guild-with-dashes', '175928847299117063');

const vectors = ids.map((id) => ({
  id,
  pods: { 3: getGatewayPodForGuild(id, 3), 5: getGatewayPodForGuild(id, 5), 10: getGatewayPodForGuild(id, 10) },
}));
process.stdout.write(JSON.stringify({ generator: 'scripts/shard-vectors.js', vectors }, null, 0) + '\n');
