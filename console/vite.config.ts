// The console is served by the gateway under /console/ (built into console/dist).
// `npm run dev` / `npm run preview` serve it on their own and pass the API calls to a
// running gateway: QM_GATEWAY (default http://127.0.0.1:8080).
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

const gateway = process.env.QM_GATEWAY ?? 'http://127.0.0.1:8080';
const proxy = Object.fromEntries(['/admin', '/v1', '/api'].map((p) => [p, gateway]));

export default defineConfig({
  base: '/console/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The large libraries in chunks of their own: cached across console releases.
    rollupOptions: {
      output: {
        manualChunks: { charts: ['recharts'], chat: ['ai', '@ai-sdk/react'] },
      },
    },
  },
  server: { proxy },
  preview: { proxy },
});
