// An authority's case-management system driving the gateway with the npm package
// fhir-kit-client (the version pinned in package.json), as such a system would: metadata,
// conditional create, read, vread, If-Match update and a stale one, search with paging,
// history, a transaction with urn:uuid references, a batch and a delete.
//
// Usage: node fhir_kit_client.mjs INPUT.json
// INPUT: {base, token, patient, nhsSystem, nhsNumbers: [conditional, transaction], team}
// (``team``: an eCAF CareTeam whose subject the script sets). Prints one JSON object: each
// step's outcome (HTTP status, headers and what the test asserts), for tests/clients/
// test_fhir_kit_client.py to check. A step that throws records the error's status and body.

import { readFileSync } from 'node:fs';
import { Client } from 'fhir-kit-client';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// The base as clients are configured with it: a trailing slash, which fhir-kit-client keeps
// when it posts a transaction or batch ("[base]/").
const client = new Client({ baseUrl: `${input.base}/fhir/`, bearerToken: input.token });
const steps = {};

function http(result) {
  const { response } = Client.httpFor(result);
  return {
    status: response?.status,
    etag: response?.headers.get('etag') ?? null,
    location: response?.headers.get('location') ?? null,
    contentType: response?.headers.get('content-type') ?? null,
  };
}

async function step(name, action) {
  try {
    steps[name] = await action();
  } catch (error) {
    steps[name] = { error: String(error.message ?? error), status: error.response?.status,
                    body: error.response?.data ?? null };
  }
}

const [conditionalNhs, transactionNhs] = input.nhsNumbers;
const identifierQuery = (nhs) => `identifier=${input.nhsSystem}|${nhs}`;
const withNhs = (nhs) => ({ ...input.patient,
                            identifier: [{ system: input.nhsSystem, value: nhs }] });
let created;

await step('metadata', async () => {
  const statement = await client.capabilityStatement();
  return { ...http(statement), resourceType: statement.resourceType,
           fhirVersion: statement.fhirVersion,
           interactions: statement.rest[0].interaction.map((i) => i.code) };
});

await step('create', async () => {
  const body = await client.create({
    resourceType: 'Patient', body: withNhs(conditionalNhs),
    options: { headers: { 'If-None-Exist': identifierQuery(conditionalNhs) } } });
  const answer = http(body);
  created = answer.location.split('/_history/')[0].split('/').pop();
  return { ...answer, id: created, resourceType: body.resourceType ?? null,
           bodyId: body.id ?? null };
});

await step('read', async () => {
  const patient = await client.read({ resourceType: 'Patient', id: created });
  return { ...http(patient), id: patient.id, versionId: patient.meta.versionId,
           nhs: patient.identifier.filter((i) => i.system === input.nhsSystem)
             .map((i) => i.value) };
});

await step('vread', async () => {
  const patient = await client.vread({ resourceType: 'Patient', id: created, version: '1' });
  return { ...http(patient), id: patient.id, versionId: patient.meta.versionId };
});

await step('conditionalCreateAgain', async () => {
  const body = await client.create({
    resourceType: 'Patient', body: withNhs(conditionalNhs),
    options: { headers: { 'If-None-Exist': identifierQuery(conditionalNhs) } } });
  const found = await client.search({ resourceType: 'Patient',
                                      searchParams: { identifier:
                                        `${input.nhsSystem}|${conditionalNhs}` } });
  return { ...http(body), resourceType: body.resourceType ?? null, bodyId: body.id ?? null,
           matches: (found.entry ?? []).filter((e) => e.search?.mode === 'match')
             .map((e) => e.resource.id) };
});

let current;
await step('update', async () => {
  current = await client.read({ resourceType: 'Patient', id: created });
  const changed = { ...current, gender: current.gender === 'female' ? 'male' : 'female' };
  const body = await client.update({ resourceType: 'Patient', id: created, body: changed,
                                     options: { headers: { 'If-Match': 'W/"1"' } } });
  const after = await client.read({ resourceType: 'Patient', id: created });
  return { ...http(body), resourceType: body.resourceType ?? null,
           versionId: after.meta.versionId, gender: after.gender,
           wanted: changed.gender };
});

await step('staleUpdate', async () => {
  const body = await client.update({ resourceType: 'Patient', id: created, body: current,
                                     options: { headers: { 'If-Match': 'W/"1"' } } });
  return { ...http(body), unexpected: 'the stale update was accepted' };
});
steps.afterStale = await client.read({ resourceType: 'Patient', id: created })
  .then((p) => ({ versionId: p.meta.versionId }));

await step('searchPaging', async () => {
  let page = await client.search({ resourceType: 'Patient', searchParams: { _count: 7 } });
  const first = http(page);
  const ids = [];
  let pages = 0;
  while (page) {
    pages += 1;
    ids.push(...(page.entry ?? []).filter((e) => e.search?.mode === 'match')
      .map((e) => e.resource.id));
    page = await client.nextPage({ bundle: page });
    if (pages > 100) throw new Error('paging does not end');
  }
  return { ...first, pages, ids };
});

await step('history', async () => {
  const bundle = await client.history({ resourceType: 'Patient', id: created });
  return { ...http(bundle), type: bundle.type,
           versions: bundle.entry.map((e) => e.resource?.meta?.versionId ?? null),
           methods: bundle.entry.map((e) => e.request?.method ?? null) };
});

const patientUuid = 'urn:uuid:8c2f4a9e-3b71-4d0c-a6e5-2f9d1b7c4e10';
let teamId;
await step('transaction', async () => {
  const team = { ...input.team, subject: { reference: patientUuid } };
  const bundle = await client.transaction({ body: {
    resourceType: 'Bundle', type: 'transaction', entry: [
      { fullUrl: patientUuid, resource: withNhs(transactionNhs),
        request: { method: 'POST', url: 'Patient' } },
      { fullUrl: 'urn:uuid:3e7b9d12-58a4-4f6b-9c0d-71e2a8b5f463', resource: team,
        request: { method: 'POST', url: 'CareTeam' } },
    ] } });
  const [patientEntry, teamEntry] = bundle.entry;
  const patientId = patientEntry.response.location.split('/_history/')[0].split('/').pop();
  teamId = teamEntry.response.location.split('/_history/')[0].split('/').pop();
  const stored = await client.read({ resourceType: 'CareTeam', id: teamId });
  return { ...http(bundle), type: bundle.type,
           statuses: bundle.entry.map((e) => e.response.status), patientId, teamId,
           subject: stored.subject.reference };
});

await step('batch', async () => {
  const bundle = await client.batch({ body: {
    resourceType: 'Bundle', type: 'batch', entry: [
      { request: { method: 'GET', url: `Patient/${created}` } },
      { request: { method: 'GET', url: `Patient?${identifierQuery(conditionalNhs)}` } },
      { request: { method: 'GET', url: 'Patient/no-such-child' } },
    ] } });
  return { ...http(bundle), type: bundle.type,
           statuses: bundle.entry.map((e) => e.response.status),
           readId: bundle.entry[0].resource?.id ?? null,
           searchTotal: bundle.entry[1].resource?.entry?.length ?? null };
});

await step('delete', async () => {
  const answer = await client.delete({ resourceType: 'CareTeam', id: teamId });
  let after;
  try {
    await client.read({ resourceType: 'CareTeam', id: teamId });
    after = 200;
  } catch (error) {
    after = error.response?.status;
  }
  return { ...http(answer), readAfter: after };
});

process.stdout.write(JSON.stringify(steps));
