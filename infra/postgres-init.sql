-- A second database for the Prefect server (SPHERE's metadata store uses "sphere").
CREATE DATABASE prefect OWNER sphere;
