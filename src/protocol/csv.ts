import { ProtocolError } from './errors.js';

/*
 * RFC 4180 CSV, small and strict enough for factory files: quoted fields (with "" and line breaks inside),
 * CRLF or LF, a leading BOM. The delimiter is the first of , ; TAB found in the header line, since
 * spreadsheets in many locales write semicolons. Each record carries the line it starts on, for error messages.
 * Pure, so both the maker tool's factory input (provisioning) and a buyer's manifest (commissioning) read CSV alike.
 */

export interface CsvRecord {
  readonly line: number;
  readonly fields: readonly string[];
}

export class CsvSyntaxError extends ProtocolError {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super('INVALID_FIELD', message, 'CSV');
  }
}

export function parseCsv(text: string): CsvRecord[] {
  const src = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const headerEnd = src.search(/\r?\n/);
  const headerLine = headerEnd === -1 ? src : src.slice(0, headerEnd);
  const delimiter = [',', ';', '\t'].find((d) => headerLine.includes(d)) ?? ',';
  const records: CsvRecord[] = [];
  let fields: string[] = [];
  let field = '';
  let line = 1;
  let recordLine = 1;
  let quoted = false; // inside a quoted field
  let wasQuoted = false; // the current field was quoted (keep its spaces)
  const endField = () => {
    fields.push(wasQuoted ? field : field.trim());
    field = '';
    wasQuoted = false;
  };
  const endRecord = () => {
    endField();
    if (fields.length > 1 || fields[0] !== '') records.push({ line: recordLine, fields });
    fields = [];
  };
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (quoted) {
      if (c === '"') {
        if (src[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"') {
      if (field.trim() !== '') throw new CsvSyntaxError(line, 'a quote inside an unquoted field (quote the whole field and double the quote)');
      field = '';
      quoted = true;
      wasQuoted = true;
    } else if (c === delimiter) {
      endField();
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && src[i + 1] === '\n') i++;
      endRecord();
      line++;
      recordLine = line;
    } else {
      if (!wasQuoted) field += c;
      else if (c !== ' ' && c !== '\t') throw new CsvSyntaxError(line, 'text after a closing quote');
    }
  }
  if (quoted) throw new CsvSyntaxError(recordLine, 'a quoted field is not closed (truncated file?)');
  endRecord();
  return records;
}

/** One field for writing: quoted when it holds the delimiter, a quote or a line break. */
export function csvField(value: string | undefined): string {
  if (value === undefined) return '';
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

export function csvLine(values: readonly (string | undefined)[]): string {
  return `${values.map(csvField).join(',')}\r\n`;
}
