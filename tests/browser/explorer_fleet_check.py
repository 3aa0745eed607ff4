"""The explorer's appliance picker in a real browser, against a gateway in front of two
appliances (`default` and `lab`, another catalog and other devices): the picker lists what
GET /v1/appliances lists, picking `lab` loads lab's catalog and asks the same question with
`appliance=lab`, the chart is lab's answer (not the default's), the snippets and the address
name it, and a reload keeps it. No console error may occur. Saves a screenshot.

Usage: explorer_fleet_check.py http://127.0.0.1:PORT SCREENSHOT.png
"""

import sys
import urllib.parse

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import browser

gateway, screenshot = sys.argv[1].rstrip("/"), sys.argv[2]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def state(driver, key):
    return driver.execute_script(f"return window.explorer.{key}")


def settled(driver):
    chart = driver.find_element(By.ID, "chart").get_attribute("data-state")
    return chart == "drawn" and not state(driver, "loading")


def query_of(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


driver = browser.start()
try:
    driver.get(gateway + "/")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.execute_script("return window.explorer && window.explorer.ready"))
    wait.until(settled)

    # The picker is the listing, the default picked; a question to it names no appliance.
    listed = requests.get(gateway + "/v1/appliances", timeout=10).json()
    check([a["name"] for a in listed] == ["default", "lab"], f"listing: {listed}")
    picker_box = driver.find_element(By.ID, "appliance-picker")
    check(picker_box.is_displayed(), "the picker is shown for a fleet")
    picker = Select(driver.find_element(By.ID, "appliance"))
    check([o.get_attribute("value") for o in picker.options] == ["default", "lab"], "picker options")
    lab_text = [o.text for o in picker.options if o.get_attribute("value") == "lab"]
    check(lab_text and "lab master" in lab_text[0], f"the label is shown: {lab_text}")
    check(picker.first_selected_option.get_attribute("value") == "default", "the default is picked")
    check(state(driver, "appliance") == "default", "window.explorer.appliance")

    # One device, a day at 15 minutes, on the default.
    devices = driver.find_element(By.ID, "devices")
    devices.clear()
    devices.send_keys("123")
    driver.find_element(By.CSS_SELECTOR, 'input[name="range"][value="24h"]').click()
    Select(driver.find_element(By.ID, "interval")).select_by_value("15min")
    Select(driver.find_element(By.ID, "metric")).select_by_value("connections")
    before = state(driver, "url")
    driver.find_element(By.ID, "show").click()
    wait.until(lambda d: state(d, "url") != before and settled(d))
    home_url = state(driver, "url")
    check("appliance" not in query_of(home_url), f"the default is not named: {home_url}")
    home_series = state(driver, "series")

    # Pick lab: its catalog, the same question with appliance=lab, lab's answer.
    picker.select_by_value("lab")
    wait.until(lambda d: state(d, "url") != home_url and settled(d))
    lab_url = state(driver, "url")
    query = query_of(lab_url)
    check(query.get("appliance") == "lab", f"appliance in {lab_url}")
    check(query.get("metric") == "connections" and query.get("did") == "123", f"the same question: {lab_url}")
    check(state(driver, "appliance") == "lab", "window.explorer.appliance after picking")
    lab_catalog = requests.get(gateway + "/v1/metrics?appliance=lab", timeout=10).json()["metrics"]
    home_catalog = requests.get(gateway + "/v1/metrics", timeout=10).json()["metrics"]
    options = {o.get_attribute("value") for o in Select(driver.find_element(By.ID, "metric")).options}
    check(options == {m["name"] for m in lab_catalog}, "the metric picker is lab's catalog")
    check(options != {m["name"] for m in home_catalog}, "lab's catalog differs from the default's")
    answer = requests.get(gateway + lab_url, timeout=10)
    check(answer.status_code == 200, f"{lab_url}: {answer.status_code}")
    body = answer.json()
    shown = state(driver, "series")
    check(len(shown) == 1 and len(body["series"]) == 1, f"one series: {len(shown)}")
    if shown and body["series"]:
        check(shown[0]["values"] == [p["value"] for p in body["series"][0]["points"]], "the chart is lab's answer")
    check(
        [s["values"] for s in shown] != [s["values"] for s in home_series],
        "lab's device 123 is another device: other numbers",
    )

    # The snippets and the address name it; a reload keeps it.
    driver.find_element(By.CSS_SELECTOR, '.tabs [data-lang="curl"]').click()
    snippet = driver.find_element(By.ID, "snippet").text
    check("appliance=lab" in snippet, f"curl snippet: {snippet}")
    driver.find_element(By.CSS_SELECTOR, '.tabs [data-lang="python"]').click()
    snippet = driver.find_element(By.ID, "snippet").text
    check('"appliance": "lab"' in snippet, f"python snippet: {snippet}")
    check("appliance=lab" in driver.current_url, f"address: {driver.current_url}")
    driver.refresh()
    wait.until(lambda d: d.execute_script("return window.explorer && window.explorer.ready"))
    wait.until(settled)
    check(state(driver, "appliance") == "lab", "a reload keeps the appliance")
    check(query_of(state(driver, "url")).get("appliance") == "lab", "and asks lab")
    driver.save_screenshot(screenshot)

    # Back to the default: the question names none again.
    Select(driver.find_element(By.ID, "appliance")).select_by_value("default")
    wait.until(lambda d: "appliance" not in query_of(state(d, "url") or "") and settled(d))
    check(state(driver, "appliance") == "default", "back to the default")

    errors = browser.console_errors(driver)
    check(not errors, f"console errors: {errors}")
finally:
    driver.quit()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("explorer fleet OK")
