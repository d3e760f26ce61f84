import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import type { FieldProblem } from '../errors.js';
import { credentialShapeOf } from '../secrets/secret-detection.js';

/**
 * Command parameters checked on the server against the action's declared JSON Schema (CMD-2), before
 * anything is stored or signed. Validators are compiled once per distinct schema and kept (bounded):
 * a fleet declares the same few actions many times.
 */

const ajv = new Ajv2020({ strict: true, allErrors: true });
const validators = new Map<string, ValidateFunction>();
const KEPT = 500;

function validatorFor(schema: Record<string, unknown>): ValidateFunction {
  const key = JSON.stringify(schema);
  let validate = validators.get(key);
  if (!validate) {
    // A schema with an $id would clash with an earlier one of the same $id: compile each apart.
    const { $id: _ignored, ...anonymous } = schema;
    validate = ajv.compile(anonymous);
    if (validators.size >= KEPT) {
      const [oldest, evicted] = validators.entries().next().value!;
      validators.delete(oldest);
      // Ajv keeps every compiled schema of its own; dropping ours alone would not free it.
      ajv.removeSchema(evicted.schema as object);
    }
    validators.set(key, validate);
  }
  return validate;
}

export function paramProblems(
  schema: Record<string, unknown>,
  params: Record<string, unknown>,
): FieldProblem[] {
  const validate = validatorFor(schema);
  const problems: FieldProblem[] = validate(params)
    ? []
    : (validate.errors ?? []).map((error) => ({
        path: `body.params${error.instancePath.replaceAll('/', '.')}`,
        message: error.message ?? 'is not valid',
      }));
  // Command rows and audit details never hold a secret (CMD, AUD-2): a credential belongs in the
  // secrets store, and reaches the command sealed, never as a parameter.
  const inspect = (value: unknown, path: string): void => {
    if (typeof value === 'string') {
      const shape = credentialShapeOf(value);
      if (shape) problems.push({ path, message: `looks like ${shape}; use a secret instead` });
    } else if (Array.isArray(value)) {
      for (const [index, item] of value.entries()) inspect(item, `${path}[${index}]`);
    } else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) inspect(child, `${path}.${key}`);
    }
  };
  inspect(params, 'body.params');
  return problems;
}
