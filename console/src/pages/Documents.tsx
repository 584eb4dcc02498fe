// A tenant's documents, as that tenant: upload (with progress), list, delete, and a
// retrieval query (GET/POST /v1/documents, DELETE /v1/documents/{id}, POST /v1/retrieve).
import { useState } from 'react';
import { tenantCall, uploadDocument } from '../api/tenant';
import type { DocumentRecord, List, RetrievedChunk } from '../api/types';
import { ErrorAlert } from '../components/ErrorAlert';
import { Table } from '../components/Table';
import { TenantKeyField } from '../components/TenantKeyField';
import { dateTime, int } from '../lib/format';
import { useResource } from '../lib/useResource';
import { useTenantKey } from '../lib/useTenantKey';

export function Documents() {
  const [key, setKey] = useTenantKey();
  const docs = useResource(
    () => (key ? tenantCall<List<DocumentRecord>>(key, '/v1/documents') : Promise.resolve(null)),
    [key],
  );
  const [error, setError] = useState<unknown>(null);

  async function remove(d: DocumentRecord) {
    if (!window.confirm(`Delete ${d.title ?? d.id} and its chunks?`)) return;
    setError(null);
    try {
      await tenantCall(key, `/v1/documents/${encodeURIComponent(d.id)}`, { method: 'DELETE' });
      docs.reload();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <>
      <TenantKeyField value={key} onChange={setKey} />
      {key && (
        <>
          <Upload tenantKey={key} onUploaded={docs.reload} />
          <h2>Documents</h2>
          <ErrorAlert error={docs.error ?? error} />
          <Table
            label="Documents"
            rows={docs.data?.data ?? []}
            rowKey={(d) => d.id}
            empty={docs.loading ? 'Loading…' : 'No documents yet.'}
            columns={[
              { label: 'Document', render: (d) => d.title ?? d.id },
              { label: 'Source', render: (d) => d.source ?? '' },
              { label: 'Format', render: (d) => d.format },
              { label: 'Chunks', render: (d) => int(d.chunk_count), numeric: true },
              { label: 'Updated', render: (d) => dateTime(d.updated_at) },
              {
                label: '',
                render: (d) => (
                  <button type="button" className="danger" onClick={() => void remove(d)}>
                    Delete
                  </button>
                ),
              },
            ]}
          />
          <Retrieve tenantKey={key} />
        </>
      )}
    </>
  );
}

function Upload({ tenantKey, onUploaded }: { tenantKey: string; onUploaded: () => void }) {
  const [progress, setProgress] = useState<number | null>(null);
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function upload(file: File) {
    setError(null);
    setResult(null);
    setProgress(0);
    try {
      const [r] = await uploadDocument(tenantKey, file, setProgress);
      setResult(
        r ? `${file.name}: ${r.status}${r.chunks !== undefined ? `, ${r.chunks} chunks` : ''}` : file.name,
      );
      onUploaded();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <section aria-label="Upload">
      <label>
        Upload a document (text, Markdown, HTML, PDF, DOCX){' '}
        <input
          type="file"
          onChange={(e) => {
            const file = e.target.files?.[0];
            if (file) void upload(file);
            e.target.value = '';
          }}
        />
      </label>
      {progress !== null && (
        <div className="progress">
          <progress aria-label="Upload progress" max={1} value={progress} />
          <span>{progress < 1 ? `${Math.round(progress * 100)}%` : 'sent'}</span>
        </div>
      )}
      <ErrorAlert error={error} />
      {result && <p role="status">{result}</p>}
    </section>
  );
}

function Retrieve({ tenantKey }: { tenantKey: string }) {
  const [text, setText] = useState('');
  const [hits, setHits] = useState<RetrievedChunk[] | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function retrieve() {
    setError(null);
    try {
      const r = await tenantCall<List<RetrievedChunk>>(tenantKey, '/v1/retrieve', {
        method: 'POST',
        body: { query: text },
      });
      setHits(r.data);
    } catch (e) {
      setError(e);
    }
  }

  return (
    <section aria-label="Retrieval">
      <h2>Try retrieval</h2>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void retrieve();
        }}
      >
        <label>
          Query <input value={text} onChange={(e) => setText(e.target.value)} size={50} required />
        </label>
        <button type="submit">Retrieve</button>
      </form>
      <ErrorAlert error={error} />
      {hits && (
        <ol className="chunks" aria-label="Retrieved chunks">
          {hits.length === 0 && <li className="muted">No chunk matched.</li>}
          {hits.map((h) => (
            <li key={h.chunk_id}>
              <div className="muted">
                {h.title ?? h.document_id}
                {h.heading ? ` › ${h.heading}` : ''} · score {h.score.toFixed(3)}
              </div>
              <p>{h.text}</p>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
