// Bundles JsSIP from node_modules into vendor/jssip.min.js (IIFE, global `JsSIP`), the same
// esbuild settings as JsSIP's own `npm run build` (its npm package ships only lib/). The output is
// committed: cargo builds never need node. Re-run after changing the jssip version.
import { readFileSync } from 'node:fs';
import esbuild from 'esbuild';

const pkg = JSON.parse(readFileSync('node_modules/jssip/package.json', 'utf8'));
const license = readFileSync('node_modules/jssip/LICENSE.md', 'utf8').trim().replace(/\*\//g, '* /');
const banner = `/*!
 * JsSIP ${pkg.version} (npm package jssip@${pkg.version}, bundled by callgate's src/webrtc/widget/vendor.mjs)
 * ${pkg.description}
 * Copyright: ${pkg.contributors.join(', ')}
 * Homepage: ${pkg.homepage}
 * License: ${pkg.license}
 *
${license.split('\n').map((l) => ` * ${l}`.trimEnd()).join('\n')}
 */`;

await esbuild.build({
  entryPoints: ['node_modules/jssip/lib/JsSIP.js'],
  outfile: 'vendor/jssip.min.js',
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'iife',
  globalName: 'JsSIP',
  platform: 'browser',
  target: ['es2015'],
  supported: { 'template-literal': false },
  legalComments: 'none',
  banner: { js: banner },
});
console.log('wrote vendor/jssip.min.js');
