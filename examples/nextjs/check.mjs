// Runs the compiled route handler (build/, from `tsc -p tsconfig.check.json`)
// against a real gateway: SSEGATE_URL must point at it, and the caller
// subscribes to orders/<id> to see the event arrive. Prints the reply.
//   node check.mjs <order-id> <status>

import { NextRequest } from 'next/server.js';
import { POST } from './build/app/api/orders/[id]/status/route.js';

const [id = '42', status = 'shipped'] = process.argv.slice(2);
const request = new NextRequest(`http://localhost/api/orders/${id}/status`, {
  method: 'POST',
  body: JSON.stringify({ status }),
  headers: { 'content-type': 'application/json' },
});
const response = await POST(request, { params: Promise.resolve({ id }) });
console.log(response.status, JSON.stringify(await response.json()));
if (response.status !== 200) process.exit(1);
