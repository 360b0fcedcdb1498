// A tiny ssegate publisher for server-side code (route handlers, server
// actions, jobs). The browser subscribes to ssegate directly with
// EventSource; this app never holds a stream open.

const SSEGATE_URL = process.env.SSEGATE_URL ?? 'http://127.0.0.1:8080';
const TOKEN = process.env.SSEGATE_PUBLISH_TOKEN; // when publish_token is set

export interface Published {
  id: string;
  topic: string;
  subscribers: number;
}

export class PublishError extends Error {
  constructor(readonly status: number, readonly reason: string) {
    super(`ssegate refused the publish: ${status} ${reason}`);
  }
}

/** Publishes one event; `data` is sent verbatim. Never waits on subscribers. */
export async function publish(
  topic: string,
  data: string,
  options: { event?: string } = {},
): Promise<Published> {
  const query = options.event ? `?event=${encodeURIComponent(options.event)}` : '';
  const response = await fetch(`${SSEGATE_URL}/publish/${topic}${query}`, {
    method: 'POST',
    body: data,
    headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {},
    signal: AbortSignal.timeout(5000),
    cache: 'no-store',
  });
  if (!response.ok) {
    throw new PublishError(response.status, (await response.text()).trim());
  }
  return (await response.json()) as Published;
}
