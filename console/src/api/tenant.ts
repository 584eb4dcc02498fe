// Calls as a tenant (documents, retrieval, models, the playground's chat) with a tenant's
// API key, which the operator creates on the keys page or pastes; kept in sessionStorage.
import { apiError, request, type RequestOptions } from './http';
import type { IngestResult } from './types';

const STORAGE = 'qm.console.tenant-key';

export function storedTenantKey(): string {
  return sessionStorage.getItem(STORAGE) ?? '';
}

export function storeTenantKey(key: string): void {
  if (key) sessionStorage.setItem(STORAGE, key);
  else sessionStorage.removeItem(STORAGE);
}

export function tenantCall<T>(
  key: string,
  path: string,
  options: Omit<RequestOptions, 'bearer'> = {},
): Promise<T> {
  return request<T>(path, { ...options, bearer: key });
}

/** Uploads one file to POST /v1/documents (multipart), reporting the fraction sent. */
export function uploadDocument(
  key: string,
  file: File,
  onProgress: (fraction: number) => void,
): Promise<IngestResult[]> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/documents');
    xhr.setRequestHeader('authorization', `Bearer ${key}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve((JSON.parse(xhr.responseText) as { data: IngestResult[] }).data);
      } else {
        reject(apiError(xhr.status, xhr.responseText));
      }
    };
    xhr.onerror = () => reject(new Error('the upload failed: the gateway did not answer'));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}
