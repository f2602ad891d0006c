import type { ActivationRun } from './activation-flow.js';

/*
 * Human-readable reports. Key values appear only with --show-keys: the simulator holds test keys, but a
 * habit of printing keys is how real ones leak into logs and tickets.
 */

export interface ReportOptions {
  readonly showKeys: boolean;
}

export function activationReport(run: ActivationRun, o: ReportOptions): string {
  const lines: string[] = [];
  const what = run.kind === 'join-request' ? `Join-request, DevNonce ${run.nonce}` : `Rejoin-request type ${run.rejoinType}, RJcount${run.rejoinType === 1 ? 1 : 0} ${run.nonce}`;
  lines.push(`request      ${what}; MACVersion ${run.macVersionSent}; DevAddr offered ${run.devAddr}`);
  const a = run.answer;
  if (!a.ok) {
    if (a.kind === 'result') lines.push(`answer       Result ${a.resultCode}${a.description ? ` — ${a.description}` : ''}`);
    else lines.push(`answer       ${a.kind}: ${a.detail}`);
  } else {
    lines.push(`answer       Result Success; SessionKeyID ${a.sessionKeyId ?? '(none)'}; Lifetime ${a.lifetime ?? '(none)'}${a.nsKeysInClear ? '; NS keys in CLEAR' : ''}`);
  }
  const d = run.device;
  if (d && !d.accepted) lines.push(`device       DROPPED the Join-accept: ${d.reason} (${d.detail})`);
  if (d?.accepted) {
    lines.push(`device       accepted: JoinNonce ${d.joinNonce}, DevAddr ${d.devAddr}, NetID ${d.netId}, OptNeg ${d.optNeg ? 1 : 0}, RX1 delay ${d.rxDelay} s${d.cfList ? ', CFList' : ''}`);
    lines.push(`session      ${d.keys.scheme === 'legacy' ? 'LoRaWAN 1.0 keys' : 'LoRaWAN 1.1 keys'}`);
    for (const c of run.comparisons) {
      const verdict = c.match === undefined ? 'not checked' : c.match ? `device = ${c.holder}` : `MISMATCH device ≠ ${c.holder}`;
      lines.push(`  ${c.key.padEnd(12)} ${verdict}${c.note ? ` (${c.note})` : ''}`);
      if (o.showKeys) {
        lines.push(`    device    ${c.device.toString('hex').toUpperCase()}`);
        if (c.delivered) lines.push(`    ${c.holder.padEnd(9)} ${c.delivered.toString('hex').toUpperCase()}`);
      }
    }
  }
  lines.push(...findingsLines(a.issues));
  lines.push(`outcome      ${run.ok ? 'OK' : 'FAILED'}`);
  return lines.join('\n');
}

export function findingsLines(issues: readonly string[]): string[] {
  return issues.length === 0 ? [] : ['findings     (deviations from TS002 seen in the answer)', ...issues.map((i) => `  - ${i}`)];
}
