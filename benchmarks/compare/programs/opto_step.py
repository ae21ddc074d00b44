"""opto: one optimisation step of the pipeline, with a loopback LLM.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 python opto_step.py [STEPS]

Runs the same pipeline as our side (workload.normalize -> add_greeting ->
count_words, trainable greeting), gives feedback on the word count, and
times `OptoPrime.step()` (problem instance, LLM request through the real
`openai` SDK to the loopback server, parsing, update) until the new value
is in the parameter node. Prints RESULT {"step_s": [...], "backward_s":
[...], "changed": bool, "parameter": py_name}.
"""
import os
import time

import openai
from measure import argument, emit
from opto.optimizers import OptoPrime
from opto.trace import bundle, node
from opto.utils.llm import AbstractModel

import workload

STEPS = argument(1, 5)

normalize = bundle()(workload.normalize)
add_greeting = bundle()(workload.add_greeting)
count_words = bundle()(workload.count_words)
greeting = node(workload.GREETING, trainable=True, name="greeting")


def pipeline(question):
    return count_words(add_greeting(normalize(question), greeting))


client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"])


def complete(**request):
    return client.chat.completions.create(model="bench-loopback", **request)


optimizer = OptoPrime([greeting], llm=AbstractModel(lambda: complete))

step_times, backward_times, changed = [], [], False
for _ in range(STEPS):
    before = greeting.data
    result = pipeline("  What Is The Capital Of France  ")
    optimizer.zero_feedback()
    start = time.perf_counter()
    result.backward("The answer should have exactly 5 words.")
    backward_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    optimizer.step()
    step_times.append(time.perf_counter() - start)
    changed = changed or greeting.data != before

emit({"step_s": step_times, "backward_s": backward_times, "changed": changed,
      "parameter": greeting.py_name, "final_value": greeting.data})
