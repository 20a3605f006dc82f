-- TESTING ONLY (branch privacy): stands for another helper's 0013; the lead drops this file.
SELECT 1;
