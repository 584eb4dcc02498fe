// A chat as a tenant, through POST /api/chat with the AI SDK's useChat: a model, or a tier
// (model `auto` with the tier hint header), the streamed answer, the grounded answer's
// sources, and the route and cache the gateway reports (GET /v1/models, GET /admin/routing
// for the tiers).
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport, type UIMessage } from 'ai';
import { useState } from 'react';
import { admin } from '../api/admin';
import { tenantCall } from '../api/tenant';
import type { List, Model, Routing } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { TenantKeyField } from '../components/TenantKeyField';
import { useResource } from '../lib/useResource';
import { useTenantKey } from '../lib/useTenantKey';

/** The gateway's `data-route` part: where routing sent the request. */
interface RouteData {
  tier: string | null;
  reason: string;
  models: string[];
}

/** The gateway's `data-cache` part. */
interface CacheData {
  hit: boolean;
  kind?: string;
  similarity?: number;
  bypass?: boolean;
}

interface Metadata {
  model?: string;
  usage?: { inputTokens?: number; outputTokens?: number };
}

type Message = UIMessage<Metadata, { route: RouteData; cache: CacheData }>;

/** Request header: ground the answer in the tenant's documents. */
const RAG_HEADER = 'x-quartermaster-rag';
/** Request header: the tier to route to (for a routed model, `auto`). */
const TIER_HEADER = 'x-quartermaster-tier';
/** The routed model: the gateway picks the tier (or takes the tier header's). */
const ROUTED = 'auto';
/** `owned_by` of the gateway's own embedding model in /v1/models: not a chat model. */
const EMBEDDING_OWNER = 'quartermaster';

const transport = new DefaultChatTransport<Message>({ api: '/api/chat' });

export function Playground() {
  const [key, setKey] = useTenantKey();
  const models = useResource(
    () => (key ? tenantCall<List<Model>>(key, '/v1/models') : Promise.resolve(null)),
    [key],
  );
  const tiers = useResource(() => admin<Routing>('/admin/routing').then((r) => r.tiers ?? []), []);
  const [model, setModel] = useState(ROUTED);
  /** A tier to ask for ('' : the router decides); with one, the model is `auto`. */
  const [tier, setTier] = useState('');
  const [grounded, setGrounded] = useState(true);
  const [input, setInput] = useState('');
  const { messages, sendMessage, status, stop, error, setMessages } = useChat<Message>({ transport });
  const busy = status === 'submitted' || status === 'streaming';

  function send() {
    const text = input.trim();
    if (!text) return;
    setInput('');
    void sendMessage(
      { text },
      {
        headers: {
          authorization: `Bearer ${key}`,
          [RAG_HEADER]: grounded ? 'on' : 'off',
          ...(tier ? { [TIER_HEADER]: tier } : {}),
        },
        body: { model: tier ? ROUTED : model },
      },
    );
  }

  return (
    <>
      <TenantKeyField value={key} onChange={setKey} />
      <ErrorAlert error={models.error ?? tiers.error} />
      {key && (
        <>
          <div className="toolbar">
            <label>
              Model{' '}
              <select
                value={tier ? ROUTED : model}
                onChange={(e) => setModel(e.target.value)}
                disabled={tier !== ''}
                title={tier ? 'A tier is picked: the model is auto, routed to that tier' : undefined}
              >
                <option value={ROUTED}>auto (routed)</option>
                {models.data?.data
                  .filter((m) => m.owned_by !== EMBEDDING_OWNER)
                  .map((m) => (
                    <option key={m.id} value={m.id}>
                      {m.id}
                    </option>
                  ))}
              </select>
            </label>
            {tiers.data && tiers.data.length > 0 && (
              <label>
                Tier{' '}
                <select value={tier} onChange={(e) => setTier(e.target.value)}>
                  <option value="">(router decides)</option>
                  {tiers.data.map((t) => (
                    <option key={t.name} value={t.name}>
                      {t.name} ({t.models.join(', ')})
                    </option>
                  ))}
                </select>
              </label>
            )}
            <label>
              <input type="checkbox" checked={grounded} onChange={(e) => setGrounded(e.target.checked)} />{' '}
              Ground answers in the tenant's documents
            </label>
            <button type="button" onClick={() => setMessages([])} disabled={busy || messages.length === 0}>
              Clear
            </button>
          </div>
          <ol className="messages" aria-label="Conversation">
            {messages.map((m) => (
              <MessageView key={m.id} message={m} />
            ))}
          </ol>
          <ErrorAlert error={error} />
          <form
            className="composer"
            onSubmit={(e) => {
              e.preventDefault();
              send();
            }}
          >
            <label className="grow">
              Message
              <textarea
                value={input}
                onChange={(e) => setInput(e.target.value)}
                onKeyDown={(e) => {
                  // Enter sends; Shift+Enter starts a new line.
                  if (e.key === 'Enter' && !e.shiftKey && !busy) {
                    e.preventDefault();
                    send();
                  }
                }}
                rows={3}
              />
            </label>
            {busy ? (
              <button type="button" onClick={() => void stop()}>
                Stop
              </button>
            ) : (
              <button type="submit" disabled={!input.trim()}>
                Send
              </button>
            )}
          </form>
        </>
      )}
    </>
  );
}

function MessageView({ message }: { message: Message }) {
  const text = message.parts.map((p) => (p.type === 'text' ? p.text : '')).join('');
  const sources = message.parts.filter((p) => p.type === 'source-document');
  const urls = message.parts.filter((p) => p.type === 'source-url');
  const route = message.parts.find((p) => p.type === 'data-route')?.data;
  const cache = message.parts.find((p) => p.type === 'data-cache')?.data;
  const meta = message.metadata;
  return (
    <li className={`message ${message.role}`} data-testid={`message-${message.role}`}>
      <div className="role">{message.role === 'user' ? 'You' : 'Assistant'}</div>
      <div className="text">{text}</div>
      {sources.length > 0 && (
        <section aria-label="Sources" className="sources">
          <strong>Sources</strong>
          <ol>
            {sources.map((s) => (
              <li key={s.sourceId}>
                {s.title}
                {s.filename && s.filename !== s.title ? ` (${s.filename})` : ''}
                {urls
                  .filter((u) => u.sourceId === s.sourceId)
                  .map((u) => (
                    <a key={u.url} href={u.url} target="_blank" rel="noreferrer">
                      {' '}
                      {u.url}
                    </a>
                  ))}
              </li>
            ))}
          </ol>
        </section>
      )}
      {message.role === 'assistant' && (
        <div className="meta" aria-label="Answer details">
          {route ? (
            <span>
              Route: {route.tier ? `tier ${route.tier}` : 'no tier'}, {route.reason} →{' '}
              {route.models.join(', ')}
            </span>
          ) : (
            cache?.hit && <span>Route: none, answered from the cache</span>
          )}
          {cache && <span>Cache: {describeCache(cache)}</span>}
          {meta?.model && <span>Model: {meta.model}</span>}
          {meta?.usage && (
            <span>
              Tokens: {meta.usage.inputTokens ?? 0} in, {meta.usage.outputTokens ?? 0} out
            </span>
          )}
        </div>
      )}
    </li>
  );
}

function describeCache(c: CacheData): string {
  if (c.hit)
    return `hit (${c.kind ?? 'exact'}${c.similarity !== undefined ? `, similarity ${c.similarity.toFixed(3)}` : ''})`;
  return c.bypass ? 'bypassed' : 'miss';
}
