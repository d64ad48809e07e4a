#!/usr/bin/env node
// A Node.js client for Lattice, built from protos/ at run time with
// @grpc/proto-loader: no generated code, only the .proto contract.
//
//   node client.js --target 127.0.0.1:50051 --token "$LATTICE_TOKEN" \
//       --model tiny-gpt --prompt "Hello" [--max-new-tokens 16] [--stream]
//
// Prints the GenerateResponse as JSON on stdout (with --stream: one JSON
// object per message). On failure prints {"code": ..., "name": ..., "details": ...}
// on stderr and exits 1.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');

function loadLattice() {
  const definition = protoLoader.loadSync('lattice/v1/inference.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // snake_case field names, as in the .proto files
    longs: String, // int64 as strings, as proto3 JSON does
    enums: String, // enum value names
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).lattice.v1;
}

function main() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: process.env.LATTICE_TARGET || '127.0.0.1:50051' },
      token: { type: 'string', default: process.env.LATTICE_TOKEN || '' },
      model: { type: 'string' },
      prompt: { type: 'string' },
      'max-new-tokens': { type: 'string', default: '16' },
      stream: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '60' },
    },
  });
  if (!values.model || !values.prompt) {
    console.error('usage: client.js --model NAME --prompt TEXT [--target HOST:PORT] [--token T]');
    process.exit(2);
  }
  const lattice = loadLattice();
  const client = new lattice.InferenceService(values.target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (values.token) {
    metadata.set('authorization', `Bearer ${values.token}`);
  }
  const request = {
    model: values.model,
    prompt: values.prompt,
    parameters: { max_new_tokens: Number(values['max-new-tokens']) },
  };
  const deadline = new Date(Date.now() + Number(values.timeout) * 1000);
  const fail = (error) => {
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code);
    console.error(JSON.stringify({ code: error.code, name, details: error.details }));
    client.close();
    process.exit(1);
  };

  if (values.stream) {
    const call = client.GenerateStream(request, metadata, { deadline });
    call.on('data', (message) => console.log(JSON.stringify(message)));
    call.on('error', fail);
    call.on('end', () => client.close());
    return;
  }
  client.Generate(request, metadata, { deadline }, (error, response) => {
    if (error) {
      fail(error);
      return;
    }
    console.log(JSON.stringify(response, null, 2));
    client.close();
  });
}

main();
