import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The server serves dist/ same-origin under a CSP that allows no inline script or style: nothing
// here may inline either (Vite's production build emits only external files).
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Small assets stay files: a data: URL for a script or style would be inline content.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    // `npm run dev -w @bulwark/console` beside a running server: the API stays same-origin.
    proxy: { '/api': 'http://127.0.0.1:8080' },
  },
});
