"""Swagger UI as shipped, in a real browser against a running gateway: open
GET /v1/metricdata, press "Try it out" and "Execute" without editing anything, and get a
200 with data. No console error may occur. Saves a screenshot.

Usage: swagger_check.py http://127.0.0.1:PORT SCREENSHOT.png
"""

import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import browser

gateway, screenshot = sys.argv[1].rstrip("/"), sys.argv[2]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


driver = browser.start(1280, 1600)
try:
    # `/docs` (no slash) is where people type; it leads to Swagger UI.
    driver.get(gateway + "/docs")
    wait = WebDriverWait(driver, 30)
    check(driver.current_url == gateway + "/docs/", f"landed on {driver.current_url}")
    block = wait.until(lambda d: d.find_element(By.ID, "operations-metrics-get_metricdata"))
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    try_it = wait.until(lambda d: block.find_element(By.CSS_SELECTOR, ".try-out__btn"))
    try_it.click()
    # The shipped examples fill the form: one metric, one device, a recent range, an interval.
    filled = {
        row.get_attribute("data-param-name"): row.find_element(By.CSS_SELECTOR, "input").get_attribute("value")
        for row in block.find_elements(By.CSS_SELECTOR, "tr[data-param-name]")
        if row.find_elements(By.CSS_SELECTOR, "input")
    }
    filled = {k: v for k, v in filled.items() if v}
    expected = {"metric": "connections", "did": "1", "from": "now-1h", "interval": "5min"}
    check(filled == expected, f"filled: {filled}")
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait.until(
        lambda d: block.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    )
    check(status.text.strip() == "200", f"status {status.text!r}")
    body = block.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_description pre").text
    try:
        answer = json.loads(body)
        check(answer["query"]["metrics"] == ["connections"], f"query: {answer['query']}")
        check(len(answer["series"][0]["points"]) >= 12, "an hour at 5 min")
        check(answer["timerange"]["end"] - answer["timerange"]["start"] == 3_600_000, "the last hour")
    except (ValueError, KeyError, IndexError) as e:
        failures.append(f"the answer is not metric data ({e}): {body[:300]}")
    url = block.find_element(By.CSS_SELECTOR, ".request-url pre").text
    check(url.startswith(gateway + "/v1/metricdata?"), f"request URL {url}")
    # The picture shows the answer: the request URL, the 200 and its body.
    responses = block.find_element(By.CSS_SELECTOR, ".responses-wrapper")
    driver.execute_script("arguments[0].scrollIntoView()", responses)
    driver.save_screenshot(screenshot)
    errors = browser.console_errors(driver)
    check(not errors, f"console errors: {errors}")
finally:
    driver.quit()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("swagger OK")
