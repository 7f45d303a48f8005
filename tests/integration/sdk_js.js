// @dapr/durabletask-js (worker + client) running a two-activity orchestration against
// a sidecar. Run by tests/integration/test_sidecar_sdks.py (NODE_PATH points at the
// npm install):  node sdk_js.js HOST:PORT   -> prints "RESULT {json}".
const { TaskHubGrpcClient, TaskHubGrpcWorker } = require("@dapr/durabletask-js");
const { OrchestrationStatus } = require(
  "@dapr/durabletask-js/orchestration/enum/orchestration-status.enum",
);

const address = process.argv[2];

const greet = async (_ctx, name) => `hello ${name}`;
const shout = async (_ctx, text) => `${text.toUpperCase()}!`;

const twoSteps = async function* (ctx, name) {
  const first = yield ctx.callActivity(greet, name);
  const second = yield ctx.callActivity(shout, first);
  return [first, second];
};

async function main() {
  const worker = new TaskHubGrpcWorker(address);
  worker.addOrchestrator(twoSteps);
  worker.addActivity(greet);
  worker.addActivity(shout);
  await worker.start();
  const client = new TaskHubGrpcClient(address);
  try {
    const id = await client.scheduleNewOrchestration(twoSteps, "ada");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    console.log("RESULT " + JSON.stringify({
      status: OrchestrationStatus[state.runtimeStatus],
      output: JSON.parse(state.serializedOutput),
    }));
  } finally {
    await worker.stop();
    await client.stop();
  }
}

main().then(
  () => process.exit(0),
  (err) => { console.error(err); process.exit(1); },
);
