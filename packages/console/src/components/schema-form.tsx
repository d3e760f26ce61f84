import type { JsonSchema } from '../types';
import { Field } from './ui';

/**
 * A form generated from an action's params JSON Schema, for the subset actions use: an object of
 * strings (with enum, length and pattern), numbers and integers (with bounds), and booleans; any
 * other property is edited as JSON. Validation here is for the person's convenience only: the
 * server validates against the same schema, and so does the agent.
 */

export type FormValues = Record<string, string | boolean>;

const typeOf = (schema: JsonSchema): string =>
  (Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type) ?? 'string';

export function initialValues(schema: JsonSchema): FormValues {
  const values: FormValues = {};
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    if (typeOf(property) === 'boolean') values[name] = property.default === true;
    else if (property.default !== undefined)
      values[name] =
        typeof property.default === 'string' ? property.default : JSON.stringify(property.default);
    else values[name] = '';
  }
  return values;
}

/** The params to send, and a problem per field that would be refused. */
export function paramsOf(schema: JsonSchema, values: FormValues) {
  const params: Record<string, unknown> = {};
  const problems: Record<string, string> = {};
  const required = new Set(schema.required ?? []);
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const raw = values[name];
    const type = typeOf(property);
    if (type === 'boolean') {
      params[name] = raw === true;
      continue;
    }
    const text = typeof raw === 'string' ? raw : '';
    if (text === '') {
      if (required.has(name)) problems[name] = 'Required.';
      continue;
    }
    if (property.enum) {
      const chosen = property.enum.find((option) => String(option) === text);
      if (chosen === undefined) problems[name] = 'Choose one of the options.';
      else params[name] = chosen;
    } else if (type === 'integer' || type === 'number') {
      const value = Number(text);
      if (!Number.isFinite(value) || (type === 'integer' && !Number.isInteger(value)))
        problems[name] = type === 'integer' ? 'A whole number.' : 'A number.';
      else if (property.minimum !== undefined && value < property.minimum)
        problems[name] = `At least ${property.minimum}.`;
      else if (property.maximum !== undefined && value > property.maximum)
        problems[name] = `At most ${property.maximum}.`;
      else params[name] = value;
    } else if (type === 'string') {
      if (property.minLength !== undefined && text.length < property.minLength)
        problems[name] = `At least ${property.minLength} characters.`;
      else if (property.maxLength !== undefined && text.length > property.maxLength)
        problems[name] = `At most ${property.maxLength} characters.`;
      else if (property.pattern !== undefined && !safePattern(property.pattern).test(text))
        problems[name] = `Must match ${property.pattern}.`;
      else params[name] = text;
    } else {
      try {
        params[name] = JSON.parse(text);
      } catch {
        problems[name] = 'Not valid JSON.';
      }
    }
  }
  return { params, problems };
}

function safePattern(pattern: string): RegExp {
  try {
    return new RegExp(pattern, 'u');
  } catch {
    return /.*/u; // A pattern the browser cannot read is left to the server to apply.
  }
}

export function SchemaFields(props: {
  schema: JsonSchema;
  values: FormValues;
  problems: Record<string, string>;
  showProblems: boolean;
  onChange: (values: FormValues) => void;
}) {
  const { schema, values, problems, showProblems, onChange } = props;
  const required = new Set(schema.required ?? []);
  const entries = Object.entries(schema.properties ?? {});
  if (entries.length === 0) return <p className="muted">This action takes no parameters.</p>;
  return (
    <>
      {entries.map(([name, property]) => {
        const type = typeOf(property);
        const label = `${property.title ?? name}${required.has(name) ? '' : ' (optional)'}`;
        const problem = showProblems ? problems[name] : undefined;
        const set = (value: string | boolean) => onChange({ ...values, [name]: value });
        const text = typeof values[name] === 'string' ? (values[name] as string) : '';
        if (type === 'boolean')
          return (
            <div className="field checkbox" key={name}>
              <input
                id={`param-${name}`}
                type="checkbox"
                checked={values[name] === true}
                onChange={(e) => set(e.target.checked)}
              />
              <label htmlFor={`param-${name}`}>{label}</label>
              {property.description && <small className="muted">{property.description}</small>}
            </div>
          );
        return (
          <Field key={name} label={label} hint={property.description} error={problem}>
            {(id, describedBy) => {
              const common = {
                id,
                name,
                'aria-describedby': describedBy,
                'aria-invalid': problem ? true : undefined,
                required: required.has(name),
              };
              if (property.enum)
                return (
                  <select {...common} value={text} onChange={(e) => set(e.target.value)}>
                    <option value="">Choose…</option>
                    {property.enum.map((option) => (
                      <option key={String(option)} value={String(option)}>
                        {String(option)}
                      </option>
                    ))}
                  </select>
                );
              if (type === 'integer' || type === 'number')
                return (
                  <input
                    {...common}
                    type="number"
                    step={type === 'integer' ? 1 : 'any'}
                    min={property.minimum}
                    max={property.maximum}
                    value={text}
                    onChange={(e) => set(e.target.value)}
                  />
                );
              if (type === 'string')
                return (
                  <input
                    {...common}
                    type="text"
                    maxLength={property.maxLength}
                    value={text}
                    onChange={(e) => set(e.target.value)}
                  />
                );
              return (
                <textarea
                  {...common}
                  className="mono"
                  rows={4}
                  value={text}
                  onChange={(e) => set(e.target.value)}
                />
              );
            }}
          </Field>
        );
      })}
    </>
  );
}
