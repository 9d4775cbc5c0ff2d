import { checkJsonContentType, HttpError, requestValidationError } from '../protocol.js';
import type { FakeRoute, RouteRequest } from './route.js';

/** The request body as pydantic checks `LoadLoRAAdapterRequest` / `UnloadLoRAAdapterRequest` (`serve/lora/protocol.py`). */
async function adapterRequest(request: RouteRequest, required: readonly string[]): Promise<Record<string, unknown>> {
  checkJsonContentType(request.header('content-type'));
  const body = (await request.json()) as Record<string, unknown>;
  const missing = required.filter((name) => body[name] === undefined);
  if (missing.length > 0) {
    throw requestValidationError(
      missing.map((name) => ({ type: 'missing', loc: ['body', name], msg: 'Field required', input: body })),
    );
  }
  for (const name of required) {
    if (typeof body[name] !== 'string') {
      throw requestValidationError([
        { type: 'string_type', loc: ['body', name], msg: 'Input should be a valid string', input: body[name] },
      ]);
    }
  }
  return body;
}

/**
 * LoRA adapters loaded and unloaded at run time (`serve/lora/api_router.py`, `openai/models/serving.py`). vLLM
 * serves these with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`; the fake always does. A loaded adapter's name is then
 * valid as `model` and listed by `/v1/models`. No weights are read: any `lora_path` loads.
 */
export const loraRoutes: FakeRoute[] = [
  {
    method: 'POST',
    path: '/v1/load_lora_adapter',
    handler: async ({ request, response, host }) => {
      const body = await adapterRequest(request, ['lora_name', 'lora_path']);
      const name = body.lora_name as string;
      const path = body.lora_path as string;
      if (name === '' || path === '') {
        throw new HttpError(400, "Both 'lora_name' and 'lora_path' must be provided.", 'InvalidUserInput');
      }
      if (body.load_inplace !== true && host.loras.has(name)) {
        throw new HttpError(
          400,
          `The lora adapter '${name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.`,
          'InvalidUserInput',
        );
      }
      host.loras.set(name, { path });
      // vLLM answers `Response(status_code=200, content=message)`: plain text, no media type.
      response.send(200, {}, `Success: LoRA adapter '${name}' added successfully.`);
    },
  },
  {
    method: 'POST',
    path: '/v1/unload_lora_adapter',
    handler: async ({ request, response, host }) => {
      const body = await adapterRequest(request, ['lora_name']);
      const name = body.lora_name as string;
      if (name === '') {
        throw new HttpError(400, "'lora_name' needs to be provided to unload a LoRA adapter.", 'InvalidUserInput');
      }
      if (!host.loras.has(name)) {
        throw new HttpError(404, `The lora adapter '${name}' cannot be found.`, 'NotFoundError');
      }
      host.loras.delete(name);
      response.send(200, {}, `Success: LoRA adapter '${name}' removed successfully.`);
    },
  },
];
