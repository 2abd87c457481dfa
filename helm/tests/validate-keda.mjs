// Validates the chart's KEDA ScaledObjects against KEDA's own schema: the validator that
// @kubernetes-models/keda generates from KEDA's API types (fetched from npm by
// scripts/test.sh into .tmp/npm). Any other custom resource in the files fails the run, so a
// new one cannot go unchecked.
//
// Usage: node helm/tests/validate-keda.mjs NODE_MODULES FILE.custom.json...
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, ...files] = process.argv.slice(2);
const entry = join(modules, "@kubernetes-models/keda/keda.sh/v1alpha1/index.js");
let keda;
try {
  keda = await import(pathToFileURL(entry).href);
} catch (error) {
  console.error(`cannot load KEDA's models from ${entry} (bash scripts/test.sh fetches them): ${error.message}`);
  process.exit(2);
}
const models = { ScaledObject: keda.ScaledObject, TriggerAuthentication: keda.TriggerAuthentication };
let failures = 0;
let checked = 0;
for (const file of files) {
  for (const doc of JSON.parse(readFileSync(file, "utf8"))) {
    const what = `${file}: ${doc.kind} ${doc.metadata?.name}`;
    const Model = doc.apiVersion === "keda.sh/v1alpha1" ? models[doc.kind] : undefined;
    if (!Model) {
      console.error(`FAIL ${what}: no schema for ${doc.apiVersion} ${doc.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(doc).validate();
      checked++;
      console.log(`${what}: valid`);
    } catch (error) {
      console.error(`FAIL ${what}: ${error.message}`);
      failures++;
    }
  }
}
console.log(`${checked} valid, ${failures} invalid`);
process.exit(failures ? 1 : 0);
