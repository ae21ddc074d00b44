"""opto: one optimisation step of the pipeline, with a loopback LLM.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 python opto_step.py [STEPS]

Runs the same pipeline as our side (workload.normalize -> add_greeting ->
count_words, trainable greeting), gives feedback on the word count, and
times `OptoPrime.step()` (problem instance, LLM request through the real
`openai` SDK to the loopback server, parsing, update) until the new value
is in the parameter node, after one warm-up step. The LLM requests are
timed where opto makes them (its `llm` callable), so `step_s - llm_s` is
the step outside the LLM. Prints RESULT {"step_s": [...], "llm_s": [...],
"backward_s": [...], "changed": bool, "parameter": py_name}.
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


llm_times = []


def complete(**request):
    start = time.perf_counter()
    try:
        return client.chat.completions.create(model="bench-loopback", **request)
    finally:
        llm_times.append(time.perf_counter() - start)


optimizer = OptoPrime([greeting], llm=AbstractModel(lambda: complete))

step_times, backward_times, llm_step_times, changed = [], [], [], False
for index in range(STEPS + 1):  # step 0 warms up (first request, lazy imports), as ours_step.py does
    before = greeting.data
    result = pipeline("  What Is The Capital Of France  ")
    optimizer.zero_feedback()
    start = time.perf_counter()
    result.backward("The answer should have exactly 5 words.")
    backward = time.perf_counter() - start
    llm_times.clear()
    start = time.perf_counter()
    optimizer.step()
    if index > 0:
        step_times.append(time.perf_counter() - start)
        llm_step_times.append(sum(llm_times))
        backward_times.append(backward)
        changed = changed or greeting.data != before

emit({"step_s": step_times, "llm_s": llm_step_times, "backward_s": backward_times, "changed": changed,
      "parameter": greeting.py_name, "final_value": greeting.data})
